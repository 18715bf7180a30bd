"""Whether a ``--model`` value can be loaded, answered at once instead of after minutes of Hub retries.

A ``--model`` that is neither a folder nor a model the Hugging Face Hub can serve used to reach
``from_pretrained``, which retries the Hub for minutes before it fails. :func:`check_model_source`
answers at once: a local folder passes; a Hub id passes when it is in the local Hub cache or when
one request to the Hub (no retries, short timeout) finds it; anything else is a one-line
:class:`~mmat_core.errors.ConfigError` that names the value and says how to make a tiny test model.
``mmat train --trainer hf-lora``, ``mmat infer``, ``mmat eval`` and ``mmat serve`` (their local
transformers models) all check their ``--model`` here before loading it.

Only the standard library and ``huggingface_hub`` (imported when a Hub id is checked) are used, so
the check costs nothing until it runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmat_core.errors import ConfigError

#: Seconds the one request to the Hub may take; a slow Hub is not worth minutes of waiting here.
PROBE_TIMEOUT_S = 10.0
_TRUE = {"1", "true", "yes", "on"}
_HINT = "make a tiny random test model with `mmat tiny-model {folder}` (then --model {folder}), or pass a local model folder"
_REPO_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_model_source(model: str, *, key: str = "model") -> None:
    """Raise a one-line ``ConfigError`` (``key``, default ``model``) unless ``model`` is a folder or a
    Hugging Face Hub model that can be loaded (in the Hub cache, or found by one request to the Hub)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return
    folder = path.name or "tiny-vlm"
    hint = _HINT.format(folder=folder)
    if path.exists():
        raise ConfigError(f"'{model}' is a file, not a model folder; {hint}", key=key)
    if not looks_like_repo_id(model):
        raise ConfigError(f"no folder '{model}' (and it is not a Hugging Face model id); {hint}", key=key)
    if _in_hub_cache(model):
        return
    if hub_offline():
        raise ConfigError(f"'{model}' is not a folder here and not in the Hugging Face cache, and the Hub is "
                          f"off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE); {hint}", key=key)
    problem = _probe_hub(model)
    if problem:
        raise ConfigError(f"'{model}' is not a folder here and {problem}; {hint}", key=key)


def looks_like_repo_id(model: str) -> bool:
    """``name`` or ``owner/name`` made of the characters the Hub allows (no path syntax)."""
    parts = model.split("/")
    return (len(parts) <= 2 and all(parts) and all(set(part) <= _REPO_CHARACTERS for part in parts)
            and not any(part.startswith(".") or part.endswith(".") or ".." in part for part in parts))


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` turns the Hub off."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _in_hub_cache(model: str) -> bool:
    """True when the Hub cache holds the model's ``config.json`` (a LoRA adapter's
    ``adapter_config.json``); the cache is found at call time (HF_HUB_CACHE / HF_HOME)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # installed with transformers; without it there is no cache to read
        return False

    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None)
    for name in ("config.json", "adapter_config.json"):
        try:
            found = try_to_load_from_cache(model, name, cache_dir=cache)
        except ValueError:  # not a valid repo id after all
            return False
        if isinstance(found, str):
            return True
    return False


def _probe_hub(model: str) -> str | None:
    """One request for the model's Hub page; None when it exists, else what went wrong (one clause)."""
    import urllib.error  # here, not at the top: http.client and ssl cost every command that imports this
    import urllib.parse
    import urllib.request

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    url = f"{endpoint}/api/models/{urllib.parse.quote(model, safe='/')}"
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "mmat"})
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            private = "" if token else " (a private model needs HF_TOKEN)"
            return f"the Hugging Face Hub has no model '{model}'{private}"
        return None  # a Hub hiccup (5xx, 429): let transformers try and report
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the Hugging Face Hub cannot be reached ({endpoint}: {reason})"
