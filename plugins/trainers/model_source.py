"""Where ``--model`` comes from, and whether the packages to load it are installed, checked first.

A ``--model`` that is neither a folder nor a model the Hugging Face Hub can serve used to reach
``from_pretrained``, which retries the Hub for minutes before it fails. :func:`check_model_source`
answers at once instead: a local folder passes; a Hub id passes when it is in the local Hub cache
or when one request to the Hub (no retries, short timeout) finds it; anything else is a one-line
:class:`~mmat_core.errors.ConfigError` that names the value and says how to make a tiny test model.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mmat_core.errors import ConfigError

#: What training and the tiny model import, by the name pip installs (all in the ``train`` extra).
TRAINING_PACKAGES = ("torch", "transformers", "peft")

#: Seconds the one request to the Hub may take; a slow Hub is not worth minutes of waiting here.
PROBE_TIMEOUT_S = 10.0
_TRUE = {"1", "true", "yes", "on"}
_HINT = "make a tiny random test model with `mmat tiny-model {folder}` (then --model {folder}), or pass a local model folder"


def check_model_source(model: str) -> None:
    """Raise a ``ConfigError`` (key ``model``) unless ``model`` is a folder or a Hub model that can be loaded."""
    path = Path(model).expanduser()
    if path.is_dir():
        return
    folder = path.name or "tiny-vlm"
    hint = _HINT.format(folder=folder)
    if path.exists():
        raise ConfigError(f"'{model}' is a file, not a model folder; {hint}", key="model")
    if not _looks_like_repo_id(model):
        raise ConfigError(f"no folder '{model}' (and it is not a Hugging Face model id); {hint}", key="model")
    if _in_hub_cache(model):
        return
    if _offline():
        raise ConfigError(f"'{model}' is not a folder here and not in the Hugging Face cache, and the Hub is "
                          f"off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE); {hint}", key="model")
    problem = _probe_hub(model)
    if problem:
        raise ConfigError(f"'{model}' is not a folder here and {problem}; {hint}", key="model")


def _looks_like_repo_id(model: str) -> bool:
    """``name`` or ``owner/name`` made of the characters the Hub allows (no path syntax)."""
    parts = model.split("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return (len(parts) <= 2 and all(parts) and all(set(part) <= allowed for part in parts)
            and not any(part.startswith(".") or part.endswith(".") or ".." in part for part in parts))


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _in_hub_cache(model: str) -> bool:
    """True when the Hub cache holds the model's ``config.json`` (read at call time: HF_HUB_CACHE / HF_HOME)."""
    from huggingface_hub import try_to_load_from_cache

    cache = os.environ.get("HF_HUB_CACHE") or (os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None)
    try:
        found = try_to_load_from_cache(model, "config.json", cache_dir=cache)
    except ValueError:  # not a valid repo id after all
        return False
    return isinstance(found, str)


def _probe_hub(model: str) -> str | None:
    """One request for the model's Hub page; None when it exists, else what went wrong (one clause)."""
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


def require_training_packages(purpose: str, packages: tuple[str, ...] = TRAINING_PACKAGES) -> None:
    """Raise a one-line ``ConfigError`` naming the missing packages and the ``train`` extra.

    The README's first install (``.[ocr,faces]``) builds data without torch; training needs more.
    """
    import importlib

    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"{purpose} needs {', '.join(missing)}: pip install 'mmat[train]' "
                          "(from a checkout: pip install -e '.[train]')", key="trainer")
