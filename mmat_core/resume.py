"""Resuming a run: what a run directory already holds, config-change detection, secret redaction.

A run directory's store (``run.sqlite``) remembers the configuration the run was built with. When
``mmat build`` runs again into the same directory (``--resume RUN_DIR`` or the same ``--out``),
:func:`prepare_resume` compares the two:

- same configuration: finished samples are kept, the rest is done (finished model and tool calls
  come from the cache);
- a different one: ``resume.on_config_change`` decides. ``refuse`` stops with an explanation
  naming every changed key; ``apply`` keeps the finished samples as they are and builds the
  unfinished ones with the new configuration (a sample the new stream no longer selects is
  removed from the outputs and listed in ``run.json``).

Settings that change how a run executes but not what it produces (executor, concurrency, worker
threads, the cache location, the resume policy itself) never count as a change.

Secrets never reach the run directory: :func:`redact_secrets` removes every option that looks
like a key or token from the configuration before it is stored or written to ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmat_core.config import PipelineConfig
from mmat_core.errors import ConfigError
from mmat_core.models import SourceSample
from mmat_core.store import RunStore

#: Option names whose values are secrets (matched case-insensitively, anywhere in the config).
#: ``api_key_env`` names an environment variable and is kept: it is not the secret itself.
_SECRET_NAME = re.compile(r"(^|_)(api_?key|token|secret|password|passwd|auth|authorization|credentials?)$", re.IGNORECASE)
_SAFE_NAMES = {"api_key_env", "token_env", "max_tokens", "tokens_per_minute"}

#: Keys that change how a run executes, not what it produces.
EXECUTION_ONLY: tuple[str, ...] = (
    "out",
    "executor",
    "resume",
    "engine.concurrency",
    "engine.tool_workers",
    "engine.cache_path",
    "engine.gc_threshold",
    "llm_engine.concurrency",
    "llm_engine.rpm",
    "llm_engine.tpm",
    "llm_engine.timeout_s",
    "llm_engine.progress",
    "llm_engine.per_model",
)


def is_secret_name(name: str) -> bool:
    """Whether an option called ``name`` holds a secret (``api_key``, ``token``, ``password``, ...)."""
    return name.lower() not in _SAFE_NAMES and bool(_SECRET_NAME.search(name))


def redact_secrets(data: Any) -> Any:
    """A copy of ``data`` with every secret-looking key removed and every string scrubbed of
    credentials (:func:`mmat_core.secrets.scrub`), at any depth."""
    if isinstance(data, str):
        from mmat_core.secrets import scrub

        return scrub(data)
    if isinstance(data, dict):
        return {k: redact_secrets(v) for k, v in data.items() if not (isinstance(k, str) and is_secret_name(k))}
    if isinstance(data, list):
        return [redact_secrets(v) for v in data]
    return data


def _drop(data: dict[str, Any], dotted: str) -> None:
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def content_config(config: PipelineConfig | dict[str, Any]) -> dict[str, Any]:
    """The part of a configuration that decides what a run produces, secrets removed."""
    data = config.model_dump(mode="json") if isinstance(config, PipelineConfig) else json.loads(json.dumps(config))
    for key in EXECUTION_ONLY:
        _drop(data, key)
    return redact_secrets(data)


def content_fingerprint(config: PipelineConfig | dict[str, Any]) -> str:
    """A hash of :func:`content_config`: equal when two configurations build the same data."""
    text = json.dumps(content_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every setting that differs, sorted by key."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    changes = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, missing), b.get(key, missing)
        if before != after:
            changes.append((key, None if before is missing else before, None if after is missing else after))
    return changes


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class ResumePlan:
    """What a run does with the samples its store already holds."""

    #: True when the store held nothing (a new run).
    fresh: bool
    #: Finished samples found in the store.
    finished: int = 0
    #: Settings that changed since the run started (empty when none).
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    #: True when a changed configuration is applied to the unfinished samples.
    applied_change: bool = False


#: Config sections a finished run cannot change under ``apply``.
STRUCTURAL_KEYS = {"tools", "search", "llm"}


def prepare_resume(store: RunStore, config: PipelineConfig, *, run_dir: Path | None = None) -> ResumePlan:
    """Compare ``config`` with the configuration stored in ``store`` and apply the resume policy.

    Raises :class:`ConfigError` when the configuration changed and ``resume.on_config_change``
    is ``refuse``. Stores the (redacted) configuration and its fingerprint for the next run.
    """
    finished = store.count()
    stored = store.get_meta("content_config")
    new = content_config(config)
    plan = ResumePlan(fresh=finished == 0 and stored is None, finished=finished)
    if stored is not None and finished:
        plan.changes = config_changes(stored, new)
    if plan.changes:
        # Tools, retrieval and the generator shape the dialogue *and* the RR system prompt written
        # for every sample: mixing old and new samples under one prompt would be wrong data.
        structural = sorted({key.split(".")[0].split("[")[0] for key, _, _ in plan.changes} & STRUCTURAL_KEYS)
        if structural and config.resume.on_config_change == "apply":
            raise ConfigError(
                f"'apply' cannot change {', '.join(structural)} of a run with {finished} finished samples: "
                "the RR system prompt and the dialogues depend on them. "
                "Give a new --out directory for the new setting.",
                key="resume.on_config_change",
            )
        if config.resume.on_config_change == "refuse":
            where = run_dir or store.path.parent
            listed = "; ".join(f"{key}: {_short(old)} -> {_short(now)}" for key, old, now in plan.changes[:12])
            more = f" (and {len(plan.changes) - 12} more)" if len(plan.changes) > 12 else ""
            raise ConfigError(
                f"the run in {where} was started with a different configuration ({finished} samples finished). "
                f"Changed: {listed}{more}. To build the unfinished samples with the new configuration and keep the "
                "finished ones, set resume.on_config_change: apply (or --set resume.on_config_change=apply); to start "
                "afresh, give a new --out directory; to continue unchanged, resume with the original configuration "
                "(mmat build --resume RUN_DIR with no other option).",
                key="resume.on_config_change",
            )
        plan.applied_change = True
        history = store.get_meta("config_history") or []
        history.append({"changes": [[k, o, n] for k, o, n in plan.changes], "finished_before": finished})
        store.set_meta("config_history", history)
        # The new stream decides each finished sample's place again; the ones it no longer
        # contains stay retired (left out of the outputs).
        store.retire_order()
    store.set_meta("content_config", new)
    store.set_meta("content_hash", content_fingerprint(config))
    store.set_meta("config", redact_secrets(config.model_dump(mode="json")))
    store.set_meta("config_hash", config.fingerprint())
    return plan


def sample_fingerprint(sample: SourceSample) -> int:
    """A hash of what a source row says (question, constraint, answers, choices, task type,
    metric, image hashes) as a signed 64-bit number (SQLite's INTEGER): stored with each finished
    sample, so a resume can tell a row edited since it was built (see :class:`SourceChanges`)."""
    choices = "\x01" if sample.choices is None else "\x1e".join(sample.choices)
    parts = (sample.question, sample.constraint, sample.task_type, sample.metric or "", "\x1e".join(sample.answers),
             choices, "\x1e".join(image.sha256 for image in sample.images))
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SourceChangedError(ConfigError):
    """A resume met finished samples whose source rows changed since they were built, and
    ``resume.on_source_change`` is ``refuse``: nothing was generated."""


@dataclass
class SourceChanges:
    """Finished samples whose source row changed since they were built, met during a resume.

    ``stored`` maps each finished sample's id to the fingerprint stored with it (None for a
    sample stored by an mmat that kept none). The run compares each finished row it meets
    (:meth:`compare`) and acts on ``policy`` (``resume.on_source_change``): ``refuse`` stops
    before any model call, ``regenerate`` builds the changed ones again, ``keep`` keeps them."""

    policy: str
    stored: dict[str, int | None]
    #: Ids of finished samples whose row changed (or is now quarantined), in stream order.
    changed: list[str] = field(default_factory=list)
    #: Ids of finished samples whose row is no longer in the stream (removed, or quarantined now).
    gone: list[str] = field(default_factory=list)
    #: (id, fingerprint) of finished samples stored without one: recorded now, compared next time.
    unverified: list[tuple[str, int]] = field(default_factory=list)
    _last: tuple[Any, bool] | None = None

    def compare(self, row: SourceSample) -> bool:
        """Whether the finished sample ``row.id`` was built from different content (recorded in
        :attr:`changed` once). Curation and the run may both ask about the same row: the last
        answer is remembered."""
        if self._last is not None and self._last[0] is row:
            return self._last[1]
        old = self.stored.get(row.id)
        now = sample_fingerprint(row)
        changed = False
        if old is None:
            if row.id in self.stored:
                self.unverified.append((row.id, now))
        elif old != now:
            changed = True
            self.changed.append(row.id)
        self._last = (row, changed)
        return changed

    def redo(self, row: SourceSample) -> bool:
        """Whether curation must check ``row`` again as a new row: changed, under ``regenerate``."""
        return self.policy == "regenerate" and self.compare(row)

    def quarantined(self, sample_id: str) -> bool:
        """A finished sample's row is quarantined now: a change (recorded) when it was finished."""
        if sample_id in self.stored:
            self.gone.append(sample_id)
            return True
        return False

    def refusal(self, run_dir: Path) -> SourceChangedError:
        """The error of a resume refused for changed rows: how many, a few ids, what to do."""
        def listed(ids: list[str]) -> str:
            return ", ".join(repr(i) for i in ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

        parts = []
        if self.changed:
            parts.append(f"{len(self.changed)} built from rows edited since ({listed(self.changed)})")
        if self.gone:
            parts.append(f"{len(self.gone)} whose rows are no longer in the source or are quarantined now "
                         f"({listed(self.gone)})")
        return SourceChangedError(
            f"the source changed under {len(self.changed) + len(self.gone)} finished sample(s) in {run_dir}: "
            f"{'; '.join(parts)}; nothing was generated. To build the changed samples again (paying only for them) "
            "and drop the gone ones, rerun with "
            "--set resume.on_source_change=regenerate; to keep the stored samples as they are (run.json counts them), "
            "--set resume.on_source_change=keep; or give a new --out directory.",
            key="resume.on_source_change",
        )


def stored_config(run_dir: Path) -> dict[str, Any]:
    """The configuration a run directory was built with (for ``mmat build --resume``)."""

    store = RunStore.open_existing(run_dir)
    path = store.path
    try:
        config = store.get_meta("config")
    finally:
        store.close()
    if not isinstance(config, dict):
        raise ConfigError(f"{path} holds no configuration: the run never started; run `mmat build --out {run_dir}` again",
                          file=str(path))
    return config
