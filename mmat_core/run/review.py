"""Critics over traces that already exist, without regenerating them (``mmat critique``).

::

    from mmat_core.run import critique
    from mmat_core.run.review import critique_config

    config = critique_config("runs/demo", overrides={"critics": [{"name": "quality"}]})
    report = critique("runs/demo", config, out="rescored.jsonl")
    print(report.traces, dict(report.verdicts["quality"]))

The input is a run directory (its ``run.sqlite``), a run store file, or a JSON Lines file with one
Trace per line. It is never modified; ``out`` receives the re-critiqued traces, atomically.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat_core.errors import ConfigError
from mmat_core.jsonl import BadLine, iter_jsonl
from mmat_core.models import Trace
from mmat_core.store import STORE_FILE, RunStore
from mmat_core.yields import YieldTally

if TYPE_CHECKING:
    from mmat_core.components import Critic, LLMBackend
    from mmat_core.config import PipelineConfig
    from mmat_core.plugins import PluginManager


@dataclass
class Unreadable:
    """A line of a traces file that is not a Trace: reported, never fatal."""

    where: str
    reason: str


@dataclass
class CritiqueReport:
    """What a critique saw: verdicts per critic, scores, statuses, unreadable rows, and the yield
    of the re-critiqued traces (``tally``)."""

    verdicts: dict[str, Counter[str]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    unreadable: list[Unreadable] = field(default_factory=list)
    traces: int = 0
    tally: YieldTally = field(default_factory=YieldTally)
    #: Where the re-critiqued traces were written (None: not written).
    out: Path | None = None

    def add(self, trace: Trace, critics: set[str]) -> None:
        """Count the current verdicts of the re-run critics on ``trace`` and its status."""
        from mmat_core.trace_queries import current_verdicts

        self.traces += 1
        self.statuses[trace.status] += 1
        for verdict in current_verdicts(trace):
            if verdict.critic not in critics:
                continue
            self.verdicts.setdefault(verdict.critic, Counter())[verdict.verdict] += 1
            if verdict.score is not None:
                self.scores.setdefault(verdict.critic, []).append(verdict.score)


def read_traces(path: Path) -> Iterator[Trace | Unreadable]:
    """Traces from a run directory, a run store or a JSONL file, in order; a line that is not a
    Trace comes out as :class:`Unreadable` with its line number and why."""
    from pydantic import ValidationError

    store = None
    if path.is_dir():
        store = RunStore.open_existing(path, hint="give a run directory, a run store or a traces .jsonl file")
    elif path.suffix in (".sqlite", ".db"):
        store = RunStore(path)
    if store is not None:
        try:
            yield from store.traces()
        finally:
            store.close()
        return
    for number, trace in iter_jsonl(path, loads=Trace.model_validate_json):
        if not isinstance(trace, BadLine):
            yield trace
        elif isinstance(trace.error, ValidationError):
            first = trace.error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(line)"
            yield Unreadable(f"{path.name}:{number}", f"not a Trace: {where}: {first['msg']}")
        else:  # not UTF-8
            yield Unreadable(f"{path.name}:{number}", f"not a Trace: {trace.detail}")


def stored_run_config(path: Path) -> dict[str, Any]:
    """The sections of a run's configuration that critique uses (llm, critics, reflection,
    engine); {} for an input that is not a run."""
    store_file = path / STORE_FILE if path.is_dir() else path
    if store_file.suffix not in (".sqlite", ".db") or not store_file.exists():
        return {}
    store = RunStore(store_file)
    try:
        config = store.get_meta("config") or {}
    finally:
        store.close()
    # Only what critique uses: sources or outputs of the old run must not stop a re-score.
    return {key: config[key] for key in ("llm", "critics", "reflection", "engine") if key in config}


def critique_config(path: str | Path, config_file: str | Path | None = None,
                    overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """The configuration to critique ``path`` with: ``config_file`` when given, else the run's own
    llm, critics, reflection and engine sections (for a run directory or store), with
    ``overrides`` (dotted keys or sections, as :func:`mmat_core.config.load_config` takes) on top."""
    from mmat_core.config import load_config

    merged = {} if config_file else stored_run_config(Path(path))
    merged.update(overrides or {})
    return load_config(config_file, merged)


async def critique_traces(traces: Iterator[Trace | Unreadable], critics: list[Critic], llm: LLMBackend,
                          config: PipelineConfig, *, reflect: bool = False, cache_path: Path | None = None,
                          out: Path | None = None, image_dir: Path | None = None) -> CritiqueReport:
    """Re-run ``critics`` over ``traces`` (``config.engine.concurrency`` at a time) with judges
    answering through an engine client on ``llm``; write the traces to ``out`` (JSONL,
    atomically: all or nothing) when given. ``reflect`` lets a 'fix' verdict splice a
    reflection (else ``reflection.max_rounds`` is 0). Closes ``llm`` at the end."""
    from mmat_core.engine.cache import Cache
    from mmat_core.engine.client import EngineClient
    from mmat_core.engine.reflection import ReflectionStage, recritique
    from mmat_core.engine.scheduler import Scheduler
    from mmat_core.images import ImageStore
    from mmat_core.writers import AtomicFile, dumps_line

    settings = config.reflection if reflect else config.reflection.model_copy(update={"max_rounds": 0})
    cache = Cache(cache_path) if cache_path else None
    images = ImageStore(image_dir)
    # The judges' calls keep the llm_engine limits (calls in flight, rpm, tpm) as in a build;
    # engine.concurrency is the traces in flight.
    client = EngineClient(llm, Scheduler(config.llm_engine.scheduler_for(llm.name, llm.model)), images, cache)
    stage = ReflectionStage(critics, client, images, settings)
    names = {critic.name for critic in critics}
    report = CritiqueReport(out=out)
    writer = AtomicFile(out) if out else None
    batch: list[Trace] = []

    async def flush() -> None:
        done = await asyncio.gather(*(recritique(stage, trace) for trace in batch))
        for trace in done:
            report.add(trace, names)
            report.tally.add_trace(trace)
            if writer is not None:
                writer.write(dumps_line(trace.model_dump(mode="json")))
        batch.clear()

    try:
        for item in traces:
            if isinstance(item, Unreadable):
                report.unreadable.append(item)
                continue
            batch.append(item)
            if len(batch) >= config.engine.concurrency:
                await flush()
        await flush()
        if writer is not None:
            writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if cache is not None:
            cache.close()
        await llm.aclose()
    return report


def critique(path: str | Path, config: PipelineConfig, *, reflect: bool = False, out: str | Path | None = None,
             cache_path: str | Path | None = None, plugins: PluginManager | None = None,
             config_file: str | None = None) -> CritiqueReport:
    """Run ``config``'s critics (judges on ``config.llm``) over the traces at ``path``: a run
    directory, a run store or a traces ``.jsonl`` file, which is never modified.

    ``out`` receives the re-critiqued traces (JSONL, atomically); it may not be the input.
    Judge calls are cached in ``cache_path`` (default: a run directory's ``cache.sqlite``; no
    cache for other inputs). A run directory is locked while its cache is written, so a build
    or another critique into it is refused. Errors name ``config_file`` and the key."""
    from mmat_core.run.assembly import create_component
    from mmat_core.rundir import RunDirLock

    path = Path(path)
    out_path = Path(out) if out is not None else None
    if not config.critics:
        raise ConfigError("no critics to run: give --critics a,b", key="critics")
    critics: list[Critic] = [create_component("critic", spec, key=f"critics[{i}]", plugins=plugins, config_file=config_file)  # type: ignore[misc]
                             for i, spec in enumerate(config.critics)]
    llm: LLMBackend = create_component("llm", config.llm, key="llm", plugins=plugins, config_file=config_file)  # type: ignore[assignment]
    if out_path is not None and out_path.resolve() == path.resolve():
        raise ConfigError("--out must differ from the input: the input is never modified", key="--out")
    run_dir = path if path.is_dir() else path.parent
    cache = Path(cache_path) if cache_path is not None else (run_dir / "cache.sqlite" if path.is_dir() else None)
    # A run folder's cache is written to: not while a build (or another critique) writes there.
    with RunDirLock(run_dir, "mmat critique") if path.is_dir() else nullcontext():
        return asyncio.run(critique_traces(read_traces(path), critics, llm, config, reflect=reflect, cache_path=cache,
                                           out=out_path, image_dir=run_dir / "images"))
