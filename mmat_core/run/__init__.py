"""A run as public, typed phases: what every executor composes.

- :func:`prepare` opens the run (store, image store, cache, engine) and applies the resume plan,
  giving a :class:`RunContext`; :func:`close` releases it.
- :func:`generate` builds every unfinished sample into the run store.
- :func:`decide_manifest` fixes run.json's identity, times and counts before any output.
- :func:`publish_outputs` formats the stored traces (formatters get a typed
  :class:`~mmat_core.components.FormatContext` with the image store and that manifest);
  :func:`write_manifest` completes and writes ``run.json``.

:func:`run_local` composes them in one process; the Ray executor composes the same functions
over its workers (with the run's garbage-collector policy, :func:`run_gc`). :func:`critique`
re-runs critics over stored traces (``mmat critique``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmat_core.engine.gcpolicy import run_gc
from mmat_core.run.context import (
    EngineTotals,
    OutputTally,
    ProgressCallback,
    PublishedOutputs,
    RunContext,
    RunResult,
    Shard,
    utc_now,
)
from mmat_core.run.phases import (
    build_trace,
    close,
    decide_manifest,
    generate,
    open_engine,
    prepare,
    publish_outputs,
    resume,
    run_image_store,
    write_engine_report,
    write_manifest,
)

if TYPE_CHECKING:
    from mmat_core.run.local import run_local
    from mmat_core.run.review import CritiqueReport, critique

__all__ = [
    "CritiqueReport", "EngineTotals", "OutputTally", "ProgressCallback", "PublishedOutputs", "RunContext", "RunResult",
    "Shard", "build_trace", "close", "critique", "decide_manifest", "generate", "open_engine", "prepare", "publish_outputs", "resume",
    "run_gc", "run_image_store", "run_local", "utc_now", "write_engine_report", "write_manifest",
]

# Loaded on first use: the local composition pulls in the garbage-collector policy, critique the CLI-free
# critique machinery; neither is needed to import the phases.
_LAZY = {"run_local": "mmat_core.run.local", "critique": "mmat_core.run.review", "CritiqueReport": "mmat_core.run.review"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmat_core.run' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
