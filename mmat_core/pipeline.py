"""Programmatic assembly and the in-process run of a pipeline.

::

    from mmat_core import Pipeline

    result = Pipeline(source="sample", llm="offline", tools=["ocr", "face_detection"],
                      critics=["answer_match"], formatters=["rr", "orr"]).run("runs/demo")

Components are given by name, as ``{"name": ..., **options}`` or as ready objects. Everything is
resolved and validated in the constructor, so a bad name or option fails before any work and
before the output directory is touched.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mmat_core import prompts
from mmat_core.components import (
    Component,
    Critic,
    Executor,
    FormatContext,
    Formatter,
    LLMBackend,
    SearchBackend,
    Source,
    Tool,
    TraceWriter,
)
from mmat_core.config import ComponentSpec, PipelineConfig, validation_error
from mmat_core.curation import Curator
from mmat_core.engine.cache import Cache
from mmat_core.engine.client import EngineClient, build_client
from mmat_core.engine.gcpolicy import run_gc
from mmat_core.engine.rationale import LoopSettings, RationaleLoop
from mmat_core.engine.reflection import ReflectionStage, loop_regenerator
from mmat_core.engine.tools import ToolRunner
from mmat_core.errors import ConfigError, DiskFullError
from mmat_core.images import ImageStore
from mmat_core.models import KEPT_STATUSES, Provenance, Rejected, RunManifest, SourceSample, Trace, Usage
from mmat_core.plugins import PluginManager, get_plugin_manager, mmat_version
from mmat_core.resume import prepare_resume, redact_secrets
from mmat_core.rundir import RunDirLock, check_run_dir, command_line
from mmat_core.store import RunStore
from mmat_core.writers import AtomicFile, dumps_line, write_json_atomic
from mmat_core.stats import StatsTally, manifest_stats
from mmat_core.yields import YieldTally

ComponentArg = str | dict[str, Any] | Component
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    """What a finished run produced."""

    out_dir: Path
    manifest: RunManifest
    outputs: dict[str, Path] = field(default_factory=dict)
    #: The model-call engine's end-of-run report (calls, tokens, cost, what limit binds).
    engine: dict[str, Any] = field(default_factory=dict)


def _as_spec(arg: ComponentArg | ComponentSpec) -> ComponentSpec | Component:
    if isinstance(arg, (Component, ComponentSpec)):
        return arg
    if isinstance(arg, str):
        return ComponentSpec(name=arg)
    return ComponentSpec.model_validate(arg)


class Pipeline:
    """A fully resolved pipeline: components instantiated, options validated."""

    def __init__(
        self,
        source: ComponentArg | list[ComponentArg] | None = None,
        llm: ComponentArg | None = None,
        tools: list[ComponentArg] | None = None,
        critics: list[ComponentArg] | None = None,
        formatters: list[ComponentArg] | None = None,
        search: ComponentArg | None | bool = True,
        executor: ComponentArg | None = None,
        *,
        config: PipelineConfig | None = None,
        plugins: PluginManager | None = None,
        config_file: str | None = None,
    ) -> None:
        base = config or PipelineConfig()
        self.plugins = plugins or get_plugin_manager()
        self.config_file = config_file
        self.config = base
        sources = source if isinstance(source, list) else ([source] if source is not None else list(base.sources))
        self.sources: list[Source] = [self._make("source", s, f"source[{i}]" if len(sources) > 1 else "source") for i, s in enumerate(sources)]  # type: ignore[misc]
        self.llm: LLMBackend = self._make("llm", llm if llm is not None else base.llm, "llm")  # type: ignore[assignment]
        tool_args = tools if tools is not None else base.tools
        self.tools: list[Tool] = [self._make("tool", t, f"tools[{i}]") for i, t in enumerate(tool_args)]  # type: ignore[misc]
        critic_args = critics if critics is not None else base.critics
        self.critics: list[Critic] = [self._make("critic", c, f"critics[{i}]") for i, c in enumerate(critic_args)]  # type: ignore[misc]
        formatter_args = formatters if formatters is not None else base.formatters
        self.formatters: list[Formatter] = [self._make("formatter", f, f"formatters[{i}]") for i, f in enumerate(formatter_args)]  # type: ignore[misc]
        if search is True and "search" not in base.model_fields_set:
            # Unasked for, search is on for the bundled sample only (its own corpus), whatever
            # sources were given in code (see PipelineConfig).
            search = ComponentSpec(name="local") if all(s.name == "sample" for s in self.sources) else None
        search_arg = base.search if search is True else (None if search is False else search)
        self.search: SearchBackend | None = self._make("search", search_arg, "search") if search_arg is not None else None  # type: ignore[assignment]
        self.executor: Executor = self._make("executor", executor if executor is not None else base.executor, "executor")  # type: ignore[assignment]
        self._check_unique("tools", self.tools)
        self._check_unique("formatters", self.formatters)
        # What actually runs (components given in code included, options with their defaults):
        # this is what run.json, the run store and resume see, not the base config.
        self.config = self._effective_config(base)
        #: Progress callback of the current run (set by :meth:`run`).
        self.progress: ProgressCallback | None = None

    @classmethod
    def from_config(cls, config: PipelineConfig, *, plugins: PluginManager | None = None, config_file: str | None = None) -> Pipeline:
        """Build a pipeline from a validated configuration."""
        return cls(config=config, plugins=plugins, config_file=config_file)

    # -- resolution -------------------------------------------------------------------------

    def _make(self, family: str, arg: Any, key: str) -> Component:
        spec = _as_spec(arg)
        if isinstance(spec, Component):
            if spec.family != family:
                raise ConfigError(f"expected a {family} component, got a {spec.family or type(spec).__name__}", key=key)
            return spec
        try:
            cls = self.plugins.get(family, spec.name)
        except ConfigError as exc:
            raise ConfigError(str(exc), file=self.config_file, key=f"{key}.name") from None
        try:
            options = cls.Options(**spec.options)
        except ValidationError as exc:
            raise validation_error(exc, cls.Options, self.config_file, prefix=f"{key}.") from None
        try:
            return cls(options)
        except ConfigError as exc:
            raise ConfigError(str(exc), file=self.config_file, key=key) from None

    def _effective_config(self, base: PipelineConfig) -> PipelineConfig:
        def spec(component: Component) -> ComponentSpec:
            return ComponentSpec(name=component.name, **component.options.model_dump(mode="json"))

        return base.model_copy(update={
            "source": [spec(s) for s in self.sources] if len(self.sources) > 1 else spec(self.sources[0]),
            "llm": spec(self.llm),
            "tools": [spec(t) for t in self.tools],
            "critics": [spec(c) for c in self.critics],
            "formatters": [spec(f) for f in self.formatters],
            "search": spec(self.search) if self.search is not None else None,
            "executor": spec(self.executor),
        })

    def _check_unique(self, key: str, components: list[Any]) -> None:
        names = [c.name for c in components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"listed twice: {', '.join(duplicates)}", file=self.config_file, key=key)

    def components(self) -> dict[str, Any]:
        """Family -> name, plugin and version of each component (for run.json)."""

        def info(c: Component) -> dict[str, str]:
            return {"name": c.name, "plugin": type(c).plugin, "version": c.version}

        return {
            "sources": [info(s) for s in self.sources],
            "llm": {**info(self.llm), "model": self.llm.model},
            "tools": [info(t) for t in self.tools],
            "search": info(self.search) if self.search else None,
            "critics": [info(c) for c in self.critics],
            "formatters": [info(f) for f in self.formatters],
            "executor": info(self.executor),
        }

    def format_context(self) -> FormatContext:
        """What formatters need to know of this run."""
        from mmat_core.components import ToolInfo

        return FormatContext(
            tools=[ToolInfo(name=t.name, label=t.result_label(), description=t.description) for t in self.tools],
            rag_enabled=self.search is not None,
        )

    # -- running ----------------------------------------------------------------------------

    def run(self, out_dir: str | Path, *, progress: ProgressCallback | None = None, force: bool = False) -> RunResult:
        """Run the whole pipeline into ``out_dir`` with the configured executor; ``progress``
        receives events from an in-process run (executors that run elsewhere may ignore it).

        ``out_dir`` must be new, empty or a run directory mmat made (``force`` writes into any
        folder); the run holds the folder's lock throughout, so a second run into it is refused
        (:mod:`mmat_core.rundir`). A full disk ends as :class:`~mmat_core.errors.DiskFullError`.
        """
        self.progress = progress
        out = Path(out_dir)
        check_run_dir(out, force=force)
        try:
            with RunDirLock(out, command_line()):
                return self.executor.execute(self, out)
        except (OSError, sqlite3.Error) as exc:
            full = disk_full_error(exc, out)
            if full is None:
                raise
            raise full from exc

    def run_local(self, out_dir: Path, *, progress: ProgressCallback | None = None) -> RunResult:
        """Run in this process (what the ``local`` executor does)."""
        return asyncio.run(LocalRun(self, Path(out_dir), progress or self.progress).run())

    def iter_samples(self, curator: Curator | None = None) -> Iterator[SourceSample | Rejected]:
        """Every source's rows, curated (no model call): used by ``build --dry-run``. Pass a
        ``curator`` to read its counts (kept, skipped, rejected by source) afterwards."""
        curator = curator or Curator(self.config.curation, self.sources)
        return curator(row for source in self.sources for row in source.iter_rows())


log = logging.getLogger("mmat.pipeline")

#: OSError numbers that mean "no room": a full disk, a quota, a file-size limit.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def disk_full_error(exc: BaseException, out_dir: Path) -> DiskFullError | None:
    """A :class:`DiskFullError` saying what to do when ``exc`` (or an exception it was raised
    from or during) is a lack of space; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        full = isinstance(current, OSError) and current.errno in _NO_ROOM
        # SQLite says SQLITE_FULL in words ("database or disk is full").
        full = full or (isinstance(current, sqlite3.Error) and "full" in str(current).lower())
        if full:
            where = Path(getattr(current, "filename", None) or out_dir)
            probe = next((p for p in (where, *where.parents) if p.exists()), out_dir)
            try:
                free = f"{shutil.disk_usage(probe).free / 1e6:,.1f} MB free there now"
            except OSError:
                free = "free space unknown"
            what = "a file-size limit was reached" if getattr(current, "errno", None) == errno.EFBIG else "the disk is full"
            said = getattr(current, "strerror", None) or str(current)
            return DiskFullError(f"{what} ({said}) writing {where} ({free}): make room (or give `out` / engine.cache_path "
                                 f"another disk), then run the same command again: finished samples are kept and the "
                                 f"run resumes (mmat build --resume {out_dir})")
        current = current.__cause__ or current.__context__
    return None

#: Finished traces gathered before the committer task is woken (one transaction each).
COMMIT_EVERY = 256
#: Finished traces waiting for the disk past which a sample waits for a commit itself.
COMMIT_BACKLOG = 8 * COMMIT_EVERY


def write_export_problems(quarantine: AtomicFile, problems: Iterable[Rejected]) -> None:
    """Traces a formatter could not export (e.g. image_missing), once each however many
    formatters met the same problem, in a fixed order (one process or several give one file)."""
    unique: dict[tuple[str, str, str], Rejected] = {}
    for rejected in problems:
        unique.setdefault((rejected.row, rejected.reason, rejected.detail or ""), rejected)
    for key in sorted(unique):
        quarantine.write(dumps_line(unique[key].model_dump(mode="json")))


def add_outputs(outputs: dict[str, Path], name: str, files: list[Path]) -> None:
    """A formatter's files in run.json's ``outputs``: the first under its name, the others (split
    files, side files such as dataset_info.json or a card) under ``name:file``."""
    if files:
        outputs[name] = files[0]
        for extra in files[1:]:
            outputs[f"{name}:{extra.name}"] = extra


class LocalRun:
    """One in-process run of a pipeline into a run directory."""

    def __init__(self, pipeline: Pipeline, out_dir: Path, progress: ProgressCallback | None = None, *,
                 shard: tuple[int, int] | None = None, work_dir: Path | None = None, publish: bool = True) -> None:
        self.p = pipeline
        self.out_dir = out_dir
        self.progress = progress
        #: (index, count): build only the samples whose seq falls to this shard (a Ray worker).
        self.shard = shard
        #: Where this run's store and cache live: the run directory, or a worker's own folder.
        self.work_dir = work_dir or out_dir
        #: Whether to write the outputs and run.json at the end (a Ray worker leaves that to the driver).
        self.publish = publish
        self.counts: dict[str, int] = {"read": 0, "rejected": 0, "generated": 0, "skipped_finished": 0}
        self.usage = Usage()

    def _provenance(self, sample: SourceSample, client: EngineClient) -> Provenance:
        return Provenance(
            mmat_version=mmat_version(),
            generator=client.identity,
            offline=self.p.llm.offline,
            prompt_versions={
                "generator": prompts.GENERATOR_PROMPT_VERSION,
                "rr_system": prompts.RR_SYSTEM_VERSION,
                "orr_system": prompts.ORR_SYSTEM_VERSION,
            },
            tool_versions={t.name: t.version for t in self.p.tools},
            source=sample.source,
            subset=sample.subset,
            licence=sample.licence,
        )

    async def run(self) -> RunResult:
        """Build every unfinished sample, then write the outputs, run.json and engine.json."""
        # A long run tunes the garbage collector for its allocation pattern (engine/gcpolicy.py).
        with run_gc(self.p.config.engine.gc_threshold):
            return await self._run()

    async def _run(self) -> RunResult:
        p = self.p
        cfg = p.config
        started = time.monotonic()
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        store = RunStore.open(self.work_dir)
        cache_path = Path(cfg.engine.cache_path) if cfg.engine.cache_path else self.work_dir / "cache.sqlite"
        # Cache writes are committed in batches (at most a quarter of a second late), always
        # before the traces that rely on them: see Cache and store.flush below.
        cache = Cache(cache_path, commit_after_s=0.25)
        images = ImageStore(self.out_dir / "images", max_bytes=cfg.curation.max_image_bytes,
                            timeout_s=cfg.curation.image_read_timeout_s)
        # Sources that read embedded image bytes (The Cauldron's parquet) write them here.
        for source in p.sources:
            source.image_store = images
        # Limits, prices and batch mode come from the llm_engine section (docs/llms.md).
        client = build_client(p.llm, cfg.llm_engine, images, cache, self.work_dir)
        if self.progress:
            self.progress({"event": "started", "snapshot": client.snapshot})
        runner = ToolRunner(p.tools, images, llm=client, cache=cache, workers=cfg.engine.tool_workers)
        loop = RationaleLoop(
            client,
            runner,
            p.search,
            LoopSettings.from_engine(cfg.engine),
        )
        reflection = ReflectionStage(p.critics, client, images, cfg.reflection, regenerate=loop_regenerator(loop),
                                     limits=loop.settings.limits, repair_attempts=cfg.engine.repair_attempts)
        if self.shard is None:
            plan = prepare_resume(store, cfg, run_dir=self.out_dir)
            store.clear_rejected()  # this pass reads the whole stream and records them again
            store.set_meta("complete", False)
            self.counts["config_changes_applied"] = len(plan.changes)
        # id -> seq of finished samples; a worker also skips what the driver's store already holds.
        finished = store.finished_seqs(retry_failed_calls=cfg.resume.retry_failed_calls)
        if self.work_dir != self.out_dir and (self.out_dir / "run.sqlite").exists():
            main = RunStore.open(self.out_dir)
            finished.update(main.finished_seqs(retry_failed_calls=cfg.resume.retry_failed_calls))
            main.close()

        semaphore = asyncio.Semaphore(cfg.engine.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        crashed: list[BaseException] = []
        checkpointing = asyncio.Lock()
        commit_wanted = asyncio.Event()

        async def checkpoint() -> None:
            # The traces finished so far, then every cache entry put so far (a superset of the
            # calls those traces rely on), then the traces: a stored trace's calls are always on
            # disk first. The cache commits in its writer thread while other samples go on.
            async with checkpointing:
                taken = store.take_pending()
                try:
                    await cache.commit()
                    store.commit(taken)
                except BaseException:
                    store.requeue(taken)  # committed by the final flush, or by the store's close
                    raise

        async def committer() -> None:
            # Commits finished traces in batches (one transaction per COMMIT_EVERY traces) and at
            # least every second, so a crash loses little finished work (whose model and tool calls
            # are cached anyway). A task of its own: no sample waits for a commit (a sample that
            # waited held its place in `engine.concurrency`, and the run stalled behind commits).
            while True:
                try:
                    await asyncio.wait_for(commit_wanted.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass
                commit_wanted.clear()
                try:
                    await checkpoint()
                except Exception as exc:  # a full disk: stop feeding samples, as for a crashed sample
                    crashed.append(exc)
                    return

        async def process(seq: int, sample: SourceSample, dedup: int | None) -> None:
            try:
                trace = Trace(id=sample.id, sample=sample, tools=[t.name for t in p.tools], provenance=self._provenance(sample, client))
                await loop.run(trace)
                await reflection.run(trace)
                store.add_trace(seq, trace, dedup)
                self.counts["generated"] += 1
                if store.pending >= COMMIT_EVERY:
                    commit_wanted.set()
                    if store.pending >= COMMIT_BACKLOG:
                        await checkpoint()  # the disk fell behind: wait for it, memory stays bounded
                if self.progress:
                    self.progress({"done": self.counts["generated"], "status": trace.status,
                                   "rejected": self.counts["rejected"]})
            except Exception as exc:
                # Data problems end as reasons on their sample; an exception here is a bug, and
                # it would hit every sample: stop feeding new ones instead of failing a million.
                crashed.append(exc)
                raise
            finally:
                semaphore.release()

        committing = asyncio.create_task(committer())
        try:
            seq = 0
            shard_index, shard_count = self.shard or (0, 1)
            source_error: list[Exception] = []
            # A plain resume (no configuration change, now or before) meets its finished samples
            # at the same places of the same stream: curation trusts them (see Curator.trusted).
            same_config = self.shard is None and not plan.changes and not store.get_meta("config_history")
            trusted = finished if same_config and finished else None
            # The finished samples' dedup keys come from the store, not from hashing them again.
            seen = store.dedup_keys() if trusted is not None and cfg.curation.dedup else None
            curator = Curator(cfg.curation, p.sources, trusted=trusted, seen=seen, record_keys=True)
            new_keys = curator.keys

            def rows() -> Iterator[SourceSample | Rejected]:
                # A source failing mid-stream must not cost the samples already in flight.
                try:
                    yield from p.iter_samples(curator)
                except Exception as exc:
                    source_error.append(exc)

            for row in rows():
                if crashed:
                    break
                if isinstance(row, Rejected):
                    self.counts["rejected"] += 1
                    if shard_index == 0:  # every worker reads every row; one records the rejects
                        store.add_rejected(row)
                    continue
                seq += 1
                self.counts["read"] += 1
                dedup = new_keys.pop(row.id, None)
                if (seq - 1) % shard_count != shard_index:
                    continue
                done_at = finished.get(row.id)
                if done_at is not None:
                    self.counts["skipped_finished"] += 1
                    if done_at != seq and self.shard is None:  # a changed configuration moved it
                        store.move(row.id, seq)
                    continue
                await semaphore.acquire()
                task = asyncio.create_task(process(seq, row, dedup))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if self.shard is None and not source_error and not crashed:
                store.set_meta("stream_total", seq)  # the whole curated stream has been read
            if tasks:
                # Let the samples in flight finish and be stored before any error is raised.
                await asyncio.gather(*list(tasks), return_exceptions=True)
            committing.cancel()
            await asyncio.gather(committing, return_exceptions=True)  # its traces go back to the queue
            cache.flush()
            store.flush()
            if crashed:
                raise crashed[0]
            if source_error:
                raise source_error[0]
            if self.shard is None:
                retired = store.drop_retired()
                if retired:
                    self.counts["retired_by_config_change"] = len(retired)
            generation_s = time.monotonic() - started
            outputs: dict[str, Path] = {}
            manifest = None
            if self.publish:
                outputs = self._write_outputs(store)
                manifest = self._manifest(store, client, runner, started_at, generation_s, time.monotonic() - started, outputs)
                write_json_atomic(self.out_dir / "run.json", manifest.model_dump(mode="json"))
                store.set_meta("complete", True)
            self.model_calls = client.calls_made
            self.tool_errors = dict(runner.errors)
            self.client = client  # the Ray executor sums its counters over workers
            self.engine_report = client.report()
            if self.publish:
                write_json_atomic(self.out_dir / "engine.json", self.engine_report)
        finally:
            for task in tasks:
                task.cancel()
            committing.cancel()
            # Its traces go back to the store's queue, which closing the store commits.
            await asyncio.gather(committing, return_exceptions=True)
            await client.aclose()
            cache.close()  # first: the store's close commits traces that rely on these calls
            store.close()
            runner.close()
            await p.llm.aclose()
            if p.search is not None:
                await p.search.aclose()
        return RunResult(self.out_dir, manifest, outputs, engine=self.engine_report)  # type: ignore[arg-type]

    def _write_outputs(self, store: RunStore) -> dict[str, Path]:
        from mmat_core import exporter
        from mmat_core.exporter import FORMAT_CONTEXT_KEY, context_to_meta, iter_stored

        ctx = self.p.format_context()
        # Recorded so `mmat export` re-formats with exactly this operator list and wording.
        store.set_meta(FORMAT_CONTEXT_KEY, context_to_meta(ctx))
        ctx.run_info = {"out_dir": str(self.out_dir), "run_dir": str(self.out_dir)}
        workers = min(4, os.cpu_count() or 1)
        if (workers > 1 and self.publish and all(f.parallel_safe for f in self.p.formatters)
                and store.count() >= exporter.PARALLEL_MIN_TRACES):
            usage = self.usage.model_copy()
            try:
                return self._write_outputs_parallel(store, ctx, workers)
            except Exception as exc:  # e.g. a formatter that cannot be pickled for a worker process
                log.warning("formatting in %d processes failed (%s: %s); formatting in this one", workers,
                            type(exc).__name__, exc)
                self.usage = usage
        writers: list[tuple[Formatter, TraceWriter]] = [(f, f.open(self.out_dir, ctx)) for f in self.p.formatters]
        quarantine = AtomicFile(self.out_dir / "quarantine.jsonl")
        outputs: dict[str, Path] = {}
        self.yields = YieldTally()  # counted in this one pass over the traces, read by _manifest
        self.stats = StatsTally()  # run.json's figures (mmat stats), in the same pass
        try:
            # Each stored trace is parsed once into its JSON dict (for formatters that take
            # dicts: every built-in) and once into a Trace (the yield tally and the others),
            # rather than dumped back to a dict once per formatter.
            dicts = [f.accepts_dicts for f, _ in writers]
            # A validated Trace only when some formatter wants one: yields and usage are counted
            # from the stored JSON itself.
            for data, trace in iter_stored(store, models=not all(dicts), dicts=True, full=True):
                self._count(data)
                for (_, writer), as_dict in zip(writers, dicts):
                    writer.write(data if as_dict else trace)
            self._quarantine_rejected(store, quarantine)
            # Traces a formatter could not export (e.g. image_missing): once each, however many
            # formatters met the same problem.
            write_export_problems(quarantine, (r for _, writer in writers for r in getattr(writer, "rejected", ())))
            for formatter, writer in writers:
                add_outputs(outputs, formatter.name, writer.close())
            outputs["quarantine"] = quarantine.commit()
        except BaseException:
            for _, writer in writers:
                writer.abort()
            quarantine.abort()
            raise
        return outputs

    def _write_outputs_parallel(self, store: RunStore, ctx: FormatContext, workers: int) -> dict[str, Path]:
        """The outputs of a large run: worker processes format ranges of the store (as
        ``mmat export --workers`` does, byte-identical to one process) while this process counts
        yields and usage in its own pass. At a million samples the one-process pass was a twentieth
        of the run."""
        from concurrent.futures import ThreadPoolExecutor

        from mmat_core.exporter import export_parallel, iter_stored

        quarantine = AtomicFile(self.out_dir / "quarantine.jsonl")
        outputs: dict[str, Path] = {}
        self.yields = YieldTally()
        self.stats = StatsTally()
        try:
            # The thread only waits for the worker processes; the counting below runs meanwhile.
            with ThreadPoolExecutor(1, thread_name_prefix="mmat-export") as pool:
                formatting = pool.submit(export_parallel, self.out_dir, list(self.p.formatters), self.out_dir, None,
                                         store.seq_bounds(), workers, ctx)
                for data, _ in iter_stored(store, models=False, dicts=True, full=True):
                    self._count(data)
                self._quarantine_rejected(store, quarantine)
                result = formatting.result()
            write_export_problems(quarantine, result.rejected)
            for formatter in self.p.formatters:
                add_outputs(outputs, formatter.name, result.files.get(formatter.name) or [])
            outputs["quarantine"] = quarantine.commit()
        except BaseException:
            quarantine.abort()
            raise
        return outputs

    def _count(self, data: dict[str, Any]) -> None:
        """Add one stored trace (its JSON dict) to the run's usage and yield counts."""
        self.usage.add_data(data.get("usage") or {})
        self.yields.add_data(data)
        self.stats.add_data(data)

    def _quarantine_rejected(self, store: RunStore, quarantine: AtomicFile) -> None:
        """Count the rows quarantined before generation and write them to ``quarantine``."""
        for rejected in store.rejected():
            self.yields.add_rejected(rejected)
            quarantine.write(dumps_line(rejected.model_dump(mode="json")))

    def _manifest(self, store: RunStore, client: EngineClient, runner: ToolRunner, started_at: str,
                  generation_s: float, total_s: float, outputs: dict[str, Path]) -> RunManifest:
        tally = getattr(self, "yields", None) or YieldTally().add_all(store.traces(), store.rejected())
        by_source = tally.result()
        statuses = store.status_counts()
        cfg = self.p.config
        return RunManifest(
            mmat_version=mmat_version(),
            run_id=uuid.uuid4().hex[:12],
            started_at=started_at,
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            complete=True,
            config=redact_secrets(cfg.model_dump(mode="json")),
            config_hash=cfg.fingerprint(),
            components=self.p.components(),
            plugins=[info.as_dict() for info in self.p.plugins.info()],
            counts={
                **self.counts,
                "finished": store.count(),
                "kept": sum(v for k, v in statuses.items() if k in KEPT_STATUSES),
                **{f"status_{k}": v for k, v in statuses.items()},
                "model_calls": client.calls_made,
                "model_reasks": client.reasks,
                "cached_calls": client.cached_calls + client.coalesced_calls,
                "failed_calls": client.failed_calls,
                "call_retries": client.scheduler.stats.retries,
                "rate_limited": client.scheduler.stats.rate_limited,
            },
            usage_by_stage={stage: usage.model_copy() for stage, usage in sorted(client.usage_by_stage.items())},
            yield_by_source=by_source,
            stats=manifest_stats(getattr(self, "stats", None), store),
            timings_s={"generation": round(generation_s, 3), "total": round(total_s, 3)},
            usage=self.usage,
            outputs={name: path.name for name, path in outputs.items()},
            tool_errors=dict(runner.errors),
        )
