"""The phases of a run, each a public function, composed by every executor.

::

    run = prepare(pipeline, out_dir)                         # stores, engine, resume plan
    try:
        generation_s = await generate(run)                   # every unfinished sample, into the store
        manifest = decide_manifest(pipeline, run.store, run.counts, run.engine_totals(),
                                   started_at=run.started_at, generation_s=generation_s)
        published = publish_outputs(pipeline, run.store, out_dir, manifest, run.images)
        manifest = write_manifest(out_dir, run.store, manifest, published, total_s=...)
    finally:
        await close(run)

The local executor does exactly this (:func:`mmat_core.run.local.run_local`); a Ray worker opens
the engine with :func:`open_engine` and builds the samples handed to it with :func:`build_trace`,
and the Ray driver runs :func:`resume`, stores the traces, then the last three phases. The manifest is
decided before any output is written, so a formatter that prints it (the Hugging Face dataset
card) writes the same bytes in ``mmat build`` and in a later ``mmat export``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat_core import prompts
from mmat_core.components import FormatContext, Formatter, TraceWriter
from mmat_core.config import PipelineConfig
from mmat_core.curation import Curator
from mmat_core.images import ImageStore
from mmat_core.models import KEPT_STATUSES, Provenance, Rejected, RunManifest, SourceSample, Trace
from mmat_core.plugins import mmat_version
from mmat_core.resume import ResumePlan, SourceChanges, prepare_resume, redact_secrets, sample_fingerprint
from mmat_core.run.context import (
    EngineTotals,
    OutputTally,
    ProgressCallback,
    PublishedOutputs,
    RunContext,
    Shard,
    utc_now,
)
from mmat_core.store import STORE_FILE, RunStore
from mmat_core.writers import AtomicFile, dumps_line, write_json_atomic

if TYPE_CHECKING:
    from mmat_core.engine.client import EngineClient
    from mmat_core.pipeline import Pipeline

log = logging.getLogger("mmat.run")

#: Finished traces gathered before the committer task is woken (one transaction each).
COMMIT_EVERY = 256
#: Finished traces waiting for the disk past which a sample waits for a commit itself.
COMMIT_BACKLOG = 8 * COMMIT_EVERY
#: Where the engine's end-of-run report goes in the run directory.
ENGINE_REPORT = "engine.json"
#: The run's manifest in the run directory.
MANIFEST_FILE = "run.json"


# -- phase 1: prepare -----------------------------------------------------------------------


def run_image_store(out_dir: Path, config: PipelineConfig) -> ImageStore:
    """The run's image store: blobs under ``out_dir/images``, reads limited as the config says."""
    return ImageStore(out_dir / "images", max_bytes=config.curation.max_image_bytes,
                      timeout_s=config.curation.image_read_timeout_s)


def resume(store: RunStore, config: PipelineConfig, run_dir: Path) -> ResumePlan:
    """Apply the resume policy to a run's main store before new work: compare ``config`` with the
    stored one (refuse or apply a change, :func:`mmat_core.resume.prepare_resume`), forget the
    quarantined rows (this pass reads the whole stream and records them again) and mark the run
    incomplete until its manifest is written."""
    plan = prepare_resume(store, config, run_dir=run_dir)
    store.clear_rejected()
    store.set_meta("complete", False)
    return plan


def prepare(pipeline: Pipeline, out_dir: Path, *, progress: ProgressCallback | None = None,
            shard: Shard | None = None, work_dir: Path | None = None) -> RunContext:
    """Open a run: its store and cache (in ``work_dir``, default ``out_dir``), the image store,
    the engine (client, tool runner, rationale loop, reflection stage) and, for a whole run (no
    ``shard``), the resume plan. Call inside the event loop that will :func:`generate`; the
    caller must :func:`close` what this returns. The caller holds the run directory's lock
    (:class:`mmat_core.rundir.RunDirLock`; :meth:`Pipeline.run` takes it)."""
    from mmat_core.engine.cache import Cache

    cfg = pipeline.config
    started = time.monotonic()
    started_at = utc_now()
    work_dir = work_dir or out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    opened: list[Any] = []
    try:
        store = RunStore.open(work_dir)
        opened.append(store)
        cache_path = Path(cfg.engine.cache_path) if cfg.engine.cache_path else work_dir / "cache.sqlite"
        # Cache writes are committed in batches (at most a quarter of a second late), always
        # before the traces that rely on them (see generate's checkpoint).
        cache = Cache(cache_path, commit_after_s=0.25)
        opened.insert(0, cache)  # closed before the store: its close commits traces relying on these calls
        images = run_image_store(out_dir, cfg)
        # Sources that read embedded image bytes (The Cauldron's parquet) write them here.
        for source in pipeline.sources:
            source.image_store = images
        client, tools, loop, reflection = open_engine(pipeline, images, cache, work_dir)
        opened.append(tools)
        if progress:
            progress({"event": "started", "snapshot": client.snapshot})
        run = RunContext(pipeline=pipeline, out_dir=out_dir, work_dir=work_dir, store=store, images=images, cache=cache,
                         client=client, tools=tools, loop=loop, reflection=reflection, progress=progress, shard=shard,
                         started=started, started_at=started_at)
        if shard is None:
            run.plan = resume(store, cfg, out_dir)
            run.counts["config_changes_applied"] = len(run.plan.changes)
        # id -> seq of finished samples; a worker also skips what the driver's store already holds.
        if shard is None:
            # With the fingerprint of each one's source row, to find rows edited since.
            run.finished, fingerprints = store.finished_state(retry_failed_calls=cfg.resume.retry_failed_calls)
            run.source_changes = SourceChanges(cfg.resume.on_source_change, fingerprints)
        else:
            run.finished = store.finished_seqs(retry_failed_calls=cfg.resume.retry_failed_calls)
        if work_dir != out_dir and (out_dir / STORE_FILE).exists():
            main = RunStore.open(out_dir)
            try:
                run.finished.update(main.finished_seqs(retry_failed_calls=cfg.resume.retry_failed_calls))
            finally:
                main.close()
    except BaseException:
        for thing in opened:  # a refused resume must not leave the store or the cache open
            thing.close()
        raise
    return run


def open_engine(pipeline: Pipeline, images: ImageStore, cache: Any, work_dir: Path) -> tuple[Any, Any, Any, Any]:
    """The engine a run builds samples with: the model-call client (limits, prices and batch mode
    from ``llm_engine``, docs/llms.md), the tool runner, the rationale loop and the reflection
    stage, over ``cache`` (a :class:`~mmat_core.engine.cache.Cache`, or anything with its
    get/put/commit/flush, such as a cluster's cache service). The caller closes the tool runner."""
    from mmat_core.engine.client import build_client
    from mmat_core.engine.rationale import LoopSettings, RationaleLoop
    from mmat_core.engine.reflection import ReflectionStage, loop_regenerator
    from mmat_core.engine.tools import ToolRunner

    cfg = pipeline.config
    client = build_client(pipeline.llm, cfg.llm_engine, images, cache, work_dir)
    tools = ToolRunner(pipeline.tools, images, llm=client, cache=cache, workers=cfg.engine.tool_workers)
    loop = RationaleLoop(client, tools, pipeline.search, LoopSettings.from_engine(cfg.engine))
    reflection = ReflectionStage(pipeline.critics, client, images, cfg.reflection, regenerate=loop_regenerator(loop),
                                 limits=loop.settings.limits, repair_attempts=cfg.engine.repair_attempts)
    return client, tools, loop, reflection


async def build_trace(run: RunContext | Any, sample: SourceSample) -> Trace:
    """One sample through stages 2 and 3 (rationale loop, then reflection) with ``run``'s engine
    (anything with ``pipeline``, ``client``, ``loop`` and ``reflection``): its finished Trace."""
    p = run.pipeline
    trace = Trace(id=sample.id, sample=sample, tools=[t.name for t in p.tools], provenance=provenance(p, sample, run.client))
    await run.loop.run(trace)
    await run.reflection.run(trace)
    return trace


async def close(run: RunContext) -> None:
    """Release what :func:`prepare` opened: the engine's connections, the cache, then the store
    (whose close commits the traces still queued), the tool workers and the components' clients."""
    await run.client.aclose()
    run.cache.close()  # first: the store's close commits traces that rely on these calls
    run.store.close()
    run.tools.close()
    await run.pipeline.llm.aclose()
    if run.pipeline.search is not None:
        await run.pipeline.search.aclose()


# -- phase 2: generate ----------------------------------------------------------------------


def provenance(pipeline: Pipeline, sample: SourceSample, client: EngineClient) -> Provenance:
    """The provenance a new Trace of ``sample`` starts with."""
    return Provenance(
        mmat_version=mmat_version(),
        generator=client.identity,
        offline=pipeline.llm.offline,
        prompt_versions={
            "generator": prompts.GENERATOR_PROMPT_VERSION,
            "rr_system": prompts.RR_SYSTEM_VERSION,
            "orr_system": prompts.ORR_SYSTEM_VERSION,
        },
        tool_versions={t.name: t.version for t in pipeline.tools},
        source=sample.source,
        subset=sample.subset,
        licence=sample.licence,
    )


async def generate(run: RunContext) -> float:
    """Build every unfinished sample of the curated stream (of ``run.shard`` only, for a worker)
    into the run store, committing finished traces in batches, and count what happened in
    ``run.counts``; returns the seconds since the run started (also ``run.generation_s``).

    Finished samples are skipped (moved to their new place after an applied configuration
    change). A sample that crashes stops the feeding of new ones; the samples in flight finish
    and are stored before the error is raised."""
    p, cfg, store, cache = run.pipeline, run.config, run.store, run.cache
    counts, finished = run.counts, run.finished
    semaphore = asyncio.Semaphore(cfg.engine.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    crashed: list[BaseException] = []
    checkpointing = asyncio.Lock()
    commit_wanted = asyncio.Event()
    tool_names = [t.name for t in p.tools]

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

    async def process(seq: int, sample: SourceSample, dedup: int | None, fingerprint: int | None) -> None:
        try:
            trace = Trace(id=sample.id, sample=sample, tools=tool_names, provenance=provenance(p, sample, run.client))
            await run.loop.run(trace)
            await run.reflection.run(trace)
            store.add_trace(seq, trace, dedup, fingerprint)
            counts["generated"] += 1
            if store.pending >= COMMIT_EVERY:
                commit_wanted.set()
                if store.pending >= COMMIT_BACKLOG:
                    await checkpoint()  # the disk fell behind: wait for it, memory stays bounded
            if run.progress:
                run.progress({"done": counts["generated"], "status": trace.status, "rejected": counts["rejected"]})
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
        shard_index, shard_count = run.shard or (0, 1)
        source_error: list[Exception] = []
        # A plain resume (no configuration change, now or before) meets its finished samples
        # at the same places of the same stream: curation trusts them (see Curator.trusted).
        same_config = run.shard is None and run.plan is not None and not run.plan.changes and not store.get_meta("config_history")
        trusted = finished if same_config and finished else None
        # The finished samples' dedup keys come from the store, not from hashing them again.
        seen = store.dedup_keys() if trusted is not None and cfg.curation.dedup else None
        changes = run.source_changes if finished else None
        curator = Curator(cfg.curation, p.sources, trusted=trusted, seen=seen, record_keys=True,
                          redo=changes.redo if changes is not None else None, stored_key=store.dedup_key_of)
        new_keys = curator.keys
        # Under `refuse`, no new sample starts until every finished one has been met and compared
        # (or the stream ended): a resume over changed rows stops before any model call. The
        # rows read meanwhile wait here: the unfinished ones before the last finished one (after
        # a crash, about engine.concurrency of them).
        holding = changes is not None and changes.policy == "refuse"
        held: list[tuple[int, SourceSample, int | None, int]] = []
        met_finished = 0

        def release() -> list[tuple[int, SourceSample, int | None, int]]:
            nonlocal holding
            holding = False
            if changes is not None and (changes.changed or changes.gone):
                raise changes.refusal(run.out_dir)
            waiting = held[:]
            held.clear()
            return waiting

        async def start(seq: int, row: SourceSample, dedup: int | None, fingerprint: int) -> None:
            await semaphore.acquire()
            task = asyncio.create_task(process(seq, row, dedup, fingerprint))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

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
                counts["rejected"] += 1
                if shard_index == 0:  # every worker reads every row; one records the rejects
                    store.add_rejected(row)
                # A finished sample whose row is quarantined now (edited into a bad row): a change.
                if changes is not None and row.row in finished and changes.quarantined(row.row):
                    met_finished += 1
                continue
            seq += 1
            counts["read"] += 1
            dedup = new_keys.pop(row.id, None)
            if (seq - 1) % shard_count != shard_index:
                continue
            done_at = finished.get(row.id)
            if done_at is not None:
                met_finished += 1
                if changes is not None and changes.compare(row) and changes.policy == "regenerate":
                    counts["source_changed_regenerated"] = counts.get("source_changed_regenerated", 0) + 1
                    await start(seq, row, dedup, sample_fingerprint(row))  # replaces the stored one
                else:
                    counts["skipped_finished"] += 1
                    if done_at != seq and run.shard is None:  # a changed configuration moved it
                        store.move(row.id, seq)
                if holding and met_finished >= len(finished):
                    for waiting in release():
                        await start(*waiting)
                continue
            if holding:
                held.append((seq, row, dedup, sample_fingerprint(row)))
                continue
            await start(seq, row, dedup, sample_fingerprint(row))
        if (changes is not None and not crashed and not source_error and met_finished < len(finished)
                and not (run.plan is not None and run.plan.changes)):
            # The whole stream was read and some finished samples never came: their rows were
            # removed, or are quarantined by the source now. (An applied configuration change
            # retires such samples itself.)
            changes.gone.extend(i for i in finished if not curator.met(i) and i not in changes.gone)
        if holding and not crashed and not source_error:
            for waiting in release():
                await start(*waiting)
        if run.shard is None and not source_error and not crashed:
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
        if changes is not None:
            record_source_changes(store, changes, counts)
        if run.shard is None:
            retired = store.drop_retired()
            if retired:
                counts["retired_by_config_change"] = len(retired)
        run.generation_s = time.monotonic() - run.started
        return run.generation_s
    finally:
        for task in tasks:
            task.cancel()
        committing.cancel()
        # Its traces go back to the store's queue, which closing the store commits.
        await asyncio.gather(committing, return_exceptions=True)


def record_source_changes(store: RunStore, changes: SourceChanges, counts: dict[str, int]) -> None:
    """After a resume's pass: count and log the finished samples whose source row changed
    (kept under ``keep``; under ``regenerate`` rebuilt, or deleted when the row is gone from the
    stream), and record the fingerprints of samples stored without one."""
    kept = changes.changed + changes.gone
    if kept and changes.policy == "keep":
        counts["source_changed_kept"] = len(changes.changed)
        counts["source_gone_kept"] = len(changes.gone)
        log.warning("kept %d finished sample(s) whose source rows changed or are gone since they were built (%s%s), "
                    "as resume.on_source_change=keep asks; run.json counts them (source_changed_kept, "
                    "source_gone_kept)", len(kept), ", ".join(kept[:5]), " ..." if len(kept) > 5 else "")
    if changes.policy == "regenerate" and changes.gone:
        counts["source_gone_dropped"] = store.forget(changes.gone)
    if changes.unverified:
        # An older mmat stored no fingerprint: these rows could not be compared this time.
        counts["source_unverified"] = len(changes.unverified)
        log.warning("%d finished sample(s) were stored without a source fingerprint (an older mmat): their rows "
                    "could not be compared with the source this time; recorded now, compared on the next resume",
                    len(changes.unverified))
        store.set_fingerprints(changes.unverified)


# -- phase 3: decide the manifest -----------------------------------------------------------


def decide_manifest(pipeline: Pipeline, store: RunStore, counts: dict[str, int], engine: EngineTotals, *,
                    started_at: str, generation_s: float, finished_at: str | None = None) -> RunManifest:
    """run.json as far as it is known before any output is written: identity (run id, version,
    config hash), times, components and counts. :func:`write_manifest` adds what publishing
    counts (usage, yield, figures, output files) and the total time; nothing decided here
    changes, so what formatters see of the manifest is what ``run.json`` holds."""
    statuses = store.status_counts()
    cfg = pipeline.config
    return RunManifest(
        mmat_version=mmat_version(),
        run_id=uuid.uuid4().hex[:12],
        started_at=started_at,
        finished_at=finished_at or utc_now(),
        complete=True,
        config=redact_secrets(cfg.model_dump(mode="json")),
        config_hash=cfg.fingerprint(),
        components=pipeline.components(),
        plugins=[info.as_dict() for info in pipeline.plugins.info()],
        counts={
            **counts,
            "finished": store.count(),
            "kept": sum(v for k, v in statuses.items() if k in KEPT_STATUSES),
            **{f"status_{k}": v for k, v in statuses.items()},
            **engine.manifest_counts(),
        },
        usage_by_stage=dict(sorted(engine.usage_by_stage.items())),
        timings_s={"generation": round(generation_s, 3)},
        tool_errors=dict(engine.tool_errors),
    )


# -- phase 4: publish the outputs and the manifest ------------------------------------------


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


def quarantine_rejected(store: RunStore, quarantine: AtomicFile, tally: OutputTally) -> None:
    """Count the rows quarantined before generation and write them to ``quarantine``."""
    for rejected in store.rejected():
        tally.yields.add_rejected(rejected)
        quarantine.write(dumps_line(rejected.model_dump(mode="json")))


def publish_outputs(pipeline: Pipeline, store: RunStore, out_dir: Path, manifest: RunManifest, images: ImageStore, *,
                    workers: int | None = None) -> PublishedOutputs:
    """Write every formatter's output and ``quarantine.jsonl`` from the stored traces, in ``seq``
    order, all or nothing, counting usage, yields and figures in the same pass.

    Formatters get a :class:`FormatContext` with the run directory, its image store and the
    decided ``manifest``. The context is also recorded in the store, so ``mmat export``
    re-formats with exactly this operator list and wording. From
    :data:`mmat_core.exporter.PARALLEL_MIN_TRACES` stored traces, when every formatter is
    ``parallel_safe``, ranges of the store are formatted in ``workers`` processes (default: up
    to 4), byte-identical to one process."""
    from mmat_core import exporter
    from mmat_core.exporter import FORMAT_CONTEXT_KEY, context_to_meta

    ctx = pipeline.format_context()
    store.set_meta(FORMAT_CONTEXT_KEY, context_to_meta(ctx))
    ctx.run_dir = out_dir
    ctx.images = images
    ctx.manifest = manifest
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if (workers > 1 and all(f.parallel_safe for f in pipeline.formatters)
            and store.count() >= exporter.PARALLEL_MIN_TRACES):
        tally = OutputTally.new()
        try:
            return PublishedOutputs(publish_in_processes(pipeline.formatters, store, out_dir, ctx, workers, tally), tally)
        except Exception as exc:  # e.g. a formatter that cannot be pickled for a worker process
            log.warning("formatting in %d processes failed (%s: %s); formatting in this one", workers,
                        type(exc).__name__, exc)
    tally = OutputTally.new()  # afresh: a failed parallel attempt may have counted part of the run
    return PublishedOutputs(publish_in_this_process(pipeline.formatters, store, out_dir, ctx, tally), tally)


def publish_in_this_process(formatters: list[Formatter], store: RunStore, out_dir: Path, ctx: FormatContext,
                            tally: OutputTally) -> dict[str, Path]:
    """:func:`publish_outputs` in one pass in this process; returns run.json's ``outputs``."""
    from mmat_core.exporter import iter_stored

    writers: list[tuple[Formatter, TraceWriter]] = [(f, f.open(out_dir, ctx)) for f in formatters]
    quarantine = AtomicFile(out_dir / "quarantine.jsonl")
    outputs: dict[str, Path] = {}
    try:
        # Each stored trace is parsed once into its JSON dict (for formatters that take
        # dicts: every built-in) and once into a Trace (the yield tally and the others),
        # rather than dumped back to a dict once per formatter.
        dicts = [f.accepts_dicts for f, _ in writers]
        # A validated Trace only when some formatter wants one: yields and usage are counted
        # from the stored JSON itself.
        for data, trace in iter_stored(store, models=not all(dicts), dicts=True, full=True):
            tally.add(data)
            for (_, writer), as_dict in zip(writers, dicts):
                writer.write(data if as_dict else trace)
        quarantine_rejected(store, quarantine, tally)
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


def publish_in_processes(formatters: list[Formatter], store: RunStore, out_dir: Path, ctx: FormatContext, workers: int,
                         tally: OutputTally) -> dict[str, Path]:
    """:func:`publish_outputs` for a large run: worker processes format ranges of the store (as
    ``mmat export --workers`` does, byte-identical to one process) while this process counts
    yields and usage in its own pass. At a million samples the one-process pass was a twentieth
    of the run."""
    from concurrent.futures import ThreadPoolExecutor

    from mmat_core.exporter import export_parallel, iter_stored

    quarantine = AtomicFile(out_dir / "quarantine.jsonl")
    outputs: dict[str, Path] = {}
    try:
        # The thread only waits for the worker processes; the counting below runs meanwhile.
        with ThreadPoolExecutor(1, thread_name_prefix="mmat-export") as pool:
            formatting = pool.submit(export_parallel, out_dir, list(formatters), out_dir, None,
                                     store.seq_bounds(), workers, ctx)
            for data, _ in iter_stored(store, models=False, dicts=True, full=True):
                tally.add(data)
            quarantine_rejected(store, quarantine, tally)
            result = formatting.result()
        write_export_problems(quarantine, result.rejected)
        for formatter in formatters:
            add_outputs(outputs, formatter.name, result.files.get(formatter.name) or [])
        outputs["quarantine"] = quarantine.commit()
    except BaseException:
        quarantine.abort()
        raise
    return outputs


def write_manifest(out_dir: Path, store: RunStore, manifest: RunManifest, published: PublishedOutputs, *,
                   total_s: float) -> RunManifest:
    """Complete the decided ``manifest`` with what publishing counted and wrote, write it to
    ``run.json`` atomically and mark the run complete in its store; returns the manifest written."""
    from mmat_core.stats import manifest_stats

    tally = published.tally
    final = manifest.model_copy(update={
        "yield_by_source": tally.yields.result(),
        "stats": manifest_stats(tally.stats, store),
        "timings_s": {**manifest.timings_s, "total": round(total_s, 3)},
        "usage": tally.usage,
        "outputs": {name: path.name for name, path in published.files.items()},
    })
    write_json_atomic(out_dir / MANIFEST_FILE, final.model_dump(mode="json"))
    store.set_meta("complete", True)
    return final


def write_engine_report(out_dir: Path, report: dict[str, Any]) -> None:
    """Write the engine's end-of-run report (``engine.json``) atomically."""
    write_json_atomic(out_dir / ENGINE_REPORT, report)
