"""The typed state a run carries from one phase to the next.

A run is four phases (:mod:`mmat_core.run.phases`): *prepare* opens the run directory's store, the
image store, the cache and the engine and applies the resume plan, giving a :class:`RunContext`;
*generate* builds every unfinished sample into the store; *decide the manifest* fixes what
``run.json`` will say (run id, times, counts) before any output is written, so every formatter
(the dataset card) sees the manifest that ``run.json`` will hold; *publish* formats the stored
traces and writes ``run.json``. What the phases hand each other is declared here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, Field

from mmat_core.models import RunManifest, Usage

if TYPE_CHECKING:
    from mmat_core.config import PipelineConfig
    from mmat_core.engine.cache import Cache
    from mmat_core.engine.client import EngineClient
    from mmat_core.engine.rationale import RationaleLoop
    from mmat_core.engine.reflection import ReflectionStage
    from mmat_core.engine.tools import ToolRunner
    from mmat_core.images import ImageStore
    from mmat_core.pipeline import Pipeline
    from mmat_core.resume import ResumePlan, SourceChanges
    from mmat_core.stats import StatsTally
    from mmat_core.store import RunStore
    from mmat_core.yields import YieldTally

#: Receives progress events of an in-process run (``{"event": "started", ...}``, then one per sample).
ProgressCallback = Callable[[dict[str, Any]], None]


def utc_now() -> str:
    """The current time as run.json writes it (UTC, ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Shard(NamedTuple):
    """Which part of the curated stream a worker builds: the samples with ``(seq - 1) % count == index``."""

    index: int
    count: int


@dataclass
class RunResult:
    """What a finished run produced."""

    out_dir: Path
    manifest: RunManifest
    outputs: dict[str, Path] = field(default_factory=dict)
    #: The model-call engine's end-of-run report (calls, tokens, cost, what limit binds).
    engine: dict[str, Any] = field(default_factory=dict)


class EngineTotals(BaseModel):
    """The model-call and tool counters of one invocation, as run.json reports them: read from a
    run's engine (:meth:`of`), or summed over the workers of a cluster run (:meth:`sum`)."""

    model_calls: int = 0
    model_reasks: int = 0
    #: Answers taken from the cache, or shared with an identical call in flight.
    cached_calls: int = 0
    failed_calls: int = 0
    call_retries: int = 0
    rate_limited: int = 0
    usage_by_stage: dict[str, Usage] = Field(default_factory=dict)
    tool_errors: dict[str, int] = Field(default_factory=dict)

    @classmethod
    def of(cls, client: EngineClient, tools: ToolRunner) -> EngineTotals:
        """The counters of a run's engine client and tool runner."""
        return cls(
            model_calls=client.calls_made,
            model_reasks=client.reasks,
            cached_calls=client.cached_calls + client.coalesced_calls,
            failed_calls=client.failed_calls,
            call_retries=client.scheduler.stats.retries,
            rate_limited=client.scheduler.stats.rate_limited,
            usage_by_stage={stage: usage.model_copy() for stage, usage in client.usage_by_stage.items()},
            tool_errors=dict(tools.errors),
        )

    @classmethod
    def sum(cls, parts: list[EngineTotals]) -> EngineTotals:
        """The totals of several invocations (the workers of one run)."""
        total = cls()
        for part in parts:
            for name in ("model_calls", "model_reasks", "cached_calls", "failed_calls", "call_retries", "rate_limited"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            for stage, usage in part.usage_by_stage.items():
                total.usage_by_stage.setdefault(stage, Usage()).add(usage)
            for tool, n in part.tool_errors.items():
                total.tool_errors[tool] = total.tool_errors.get(tool, 0) + n
        return total

    def manifest_counts(self) -> dict[str, int]:
        """The ``counts`` entries of run.json that these totals give."""
        return {
            "model_calls": self.model_calls,
            "model_reasks": self.model_reasks,
            "cached_calls": self.cached_calls,
            "failed_calls": self.failed_calls,
            "call_retries": self.call_retries,
            "rate_limited": self.rate_limited,
        }


@dataclass
class RunContext:
    """Everything an in-process run (or one worker's shard of it) has open, from :func:`prepare`
    until :func:`close`: the pipeline, where it writes, its stores and its engine."""

    pipeline: Pipeline
    #: The run directory: outputs, run.json and the image store live here.
    out_dir: Path
    #: Where the run store and the cache live: the run directory, or a worker's own folder.
    work_dir: Path
    store: RunStore
    images: ImageStore
    cache: Cache
    client: EngineClient
    tools: ToolRunner
    loop: RationaleLoop
    reflection: ReflectionStage
    progress: ProgressCallback | None = None
    #: The part of the stream this run builds (a cluster worker); None: all of it.
    shard: Shard | None = None
    #: What the run does with the samples its store already holds (None for a worker: the driver decides).
    plan: ResumePlan | None = None
    #: id -> seq of the samples already finished (in this store, or the run's main store for a worker).
    finished: dict[str, int] = field(default_factory=dict)
    #: Finished samples whose source row changed, found while generating (None for a worker).
    source_changes: SourceChanges | None = None
    #: This invocation's counts for run.json (read, rejected, generated, skipped_finished, ...).
    counts: dict[str, int] = field(default_factory=lambda: {"read": 0, "rejected": 0, "generated": 0, "skipped_finished": 0})
    #: When the run started: ``time.monotonic()`` and the wall-clock time for run.json.
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=utc_now)
    #: Seconds :func:`generate` took (None until it finished).
    generation_s: float | None = None

    @property
    def config(self) -> PipelineConfig:
        """The pipeline's effective configuration."""
        return self.pipeline.config

    def engine_totals(self) -> EngineTotals:
        """This run's model-call and tool counters."""
        return EngineTotals.of(self.client, self.tools)


@dataclass
class OutputTally:
    """What publishing counts in its one pass over the stored traces: run.json's usage, yield by
    source and figures (``mmat stats``)."""

    usage: Usage
    yields: YieldTally
    stats: StatsTally

    @classmethod
    def new(cls) -> OutputTally:
        """An empty tally."""
        from mmat_core.stats import StatsTally
        from mmat_core.yields import YieldTally

        return cls(Usage(), YieldTally(), StatsTally())

    def add(self, data: dict[str, Any]) -> None:
        """Count one stored trace (its JSON dict)."""
        self.usage.add_data(data.get("usage") or {})
        self.yields.add_data(data)
        self.stats.add_data(data)


@dataclass
class PublishedOutputs:
    """What :func:`~mmat_core.run.phases.publish_outputs` wrote and counted."""

    #: run.json's ``outputs``: formatter name (``name:file`` for its extra files) -> path.
    files: dict[str, Path]
    tally: OutputTally
