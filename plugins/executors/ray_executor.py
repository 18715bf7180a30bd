"""The ``ray`` executor: the same pipeline spread over the workers of a Ray cluster.

How a run is spread and put back together:

1. The driver prepares the run directory exactly as the local executor does (resume plan,
   configuration change policy), reads the curated stream itself (recording quarantined rows and
   skipping finished samples) and hands the rest to the workers in small batches.
2. Work is pulled, not split: each worker holds at most ``batches_per_worker`` batches, and the
   driver reads the stream only as far as the workers take it (backpressure), so a fast worker
   builds more samples than a slow one. Workers are actors (ray_worker.py), one engine each.
3. A worker whose process or node dies loses nothing: the batches it held go back to the front
   of the queue for the others (and, with ``replace_lost_workers``, a new worker is started);
   a sample is stored once, by the driver, when its batch comes back, so none is lost or stored
   twice; and every model and tool call a worker finished was sent to the run's cache service
   the moment it came back, so the re-built samples pay for none of them again.
4. The run has one budget: a limit authority (ray_services.py) holds the configured
   concurrency, rpm and tpm of each backend and model for the whole cluster, and its adaptive
   admission reacts to a 429 seen by any worker.
5. The run has one cache: the cache service owns ``RUN_DIR/cache.sqlite`` (the local executor's
   file), addressed by key, so a resume with any number of workers reuses every paid call.
6. The driver stores the traces in ``RUN_DIR/run.sqlite`` and writes the outputs from it in
   ``seq`` order with the local executor's writers (byte-identical files), ``run.json``,
   ``engine.json`` (each worker's engine report and the shared limits) and, while it runs,
   ``workers.json`` (each worker's state, read by ``mmat status``).

Ray is imported only when this executor runs (``pip install 'mmat[ray]'``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat_plugins.executors.ray_tools import ToolServiceOptions
from pydantic import Field

from mmat_core.components import ComponentOptions, Executor
from mmat_core.errors import ConfigError, MmatError

if TYPE_CHECKING:
    from mmat_core.pipeline import Pipeline
    from mmat_core.run import RunResult
    from mmat_core.store import RunStore

#: The file in the run directory where the driver keeps each worker's state while it runs.
WORKERS_FILE = "workers.json"
#: Seconds between two writes of workers.json (and store commits when few samples finish).
STATE_EVERY_S = 1.0
#: Stored traces gathered before the driver commits them.
COMMIT_EVERY = 256


class RayOptions(ComponentOptions):
    """Options of the Ray executor."""

    address: str | None = Field(None, description="cluster to join (ray://host:10001, auto); none starts a local Ray")
    workers: int | None = Field(None, ge=1, description="number of workers; default: the cluster's CPUs / cpus_per_worker")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started Ray (ignored with address)")
    object_store_memory: int | None = Field(256 * 1024 * 1024, ge=78_643_200,
                                            description="object store bytes of a locally started Ray")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker")
    samples_per_worker: int | None = Field(
        None, ge=1, description="samples each worker builds at once; default: engine.concurrency / workers")
    batch_size: int | None = Field(None, ge=1, description="samples per batch handed to a worker; default: half of samples_per_worker")
    batches_per_worker: int = Field(3, ge=1, description="batches a worker may hold at once (the backpressure)")
    replace_lost_workers: bool = Field(True, description="start a new worker when one is lost (if the cluster has room)")
    start_timeout_s: float = Field(300.0, gt=0, description="how long to wait for a worker when none is running")
    reuse_workers: bool = Field(
        False, description="keep the worker actors after the run for the next run in this driver process (same "
        "cluster, cpus_per_worker and batches_per_worker): each run opens its own engine in them, and skips their "
        "start-up (a process and its imports)")
    tool_services: dict[str, ToolServiceOptions] = Field(
        default_factory=dict, description="tools that run as shared Ray actor pools, by name (ray_tools.py)")


def shard_dir(out_dir: Path, index: int) -> Path:
    """Where a worker of the earlier, statically sharded executor kept its store."""
    return out_dir / "shards" / str(index)


def merge_shards(store: RunStore, out_dir: Path) -> int:
    """Merge the worker stores an earlier, statically sharded Ray run left under
    ``out_dir/shards`` into ``store`` (lowest index first), then delete them; returns samples merged."""
    from mmat_core.store import STORE_FILE

    merged = 0
    paths = sorted((out_dir / "shards").glob(f"*/{STORE_FILE}"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for path in paths:
        merged += store.merge(path)
    for path in paths:  # only once everything is committed in the main store
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return merged


def in_code_plugins(manager: Any) -> list[tuple[str, str, bytes]]:
    """The plugins registered in code with ``manager`` (not from an entry point), pickled for the
    workers; one that cannot be pickled is a :class:`MmatError` that says what to do."""
    from mmat_plugins.executors.ray_worker import IN_CODE_HINT, PluginTransferError
    from ray import cloudpickle

    blobs = []
    for info in manager.info():
        if info.distribution != "(registered in code)" or info.error:
            continue
        plugin = manager.pm.get_plugin(info.name)
        if plugin is None:
            continue
        try:
            blobs.append((info.name, info.version, cloudpickle.dumps(plugin)))
        except Exception as exc:  # noqa: BLE001 - whatever pickling raises, the message says what to do
            raise PluginTransferError(f"plugin {info.name!r} was registered in code and cannot be sent to the Ray "
                                      f"workers ({type(exc).__name__}: {exc}): {IN_CODE_HINT}") from None
    return blobs


#: Counters of the engine report that add up over the workers.
SUMMED = ("started", "succeeded", "failed", "retries", "rate_limited", "calls_made", "reasks", "cached_calls",
          "failed_calls", "prompt_tokens", "completion_tokens", "cost_usd")


def cluster_report(workers: list[dict[str, Any]], limits: dict[str, Any]) -> dict[str, Any]:
    """engine.json's top level for a cluster, in the local report's shape: the workers' counters
    summed, the shared limits, and what bound the calls on most workers."""
    report: dict[str, Any] = {key: sum(w.get(key, 0) for w in workers) for key in SUMMED}
    report["cost_usd"] = round(report["cost_usd"], 6)
    if workers:
        first = workers[0]
        report.update(name=first.get("name"), backend=first.get("backend"))
        bindings = [w.get("binding", "server") for w in workers]
        report["binding"] = max(set(bindings), key=bindings.count)
        report["binding_summary"] = next((w.get("binding_summary", "") for w in workers
                                          if w.get("binding") == report["binding"]), "")
        report["breaker_events"] = [e for w in workers for e in w.get("breaker_events", [])][-5:]
    shared = next(iter(limits.values()), {})
    report.update({key: shared.get(key) for key in ("concurrency", "rpm", "tpm", "admission_limit") if key in shared})
    return report


@dataclass
class WorkerSlot:
    """The driver's view of one worker."""

    id: str
    actor: Any
    ready: Any
    created: float = field(default_factory=time.monotonic)
    state: str = "starting"
    info: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    batches: set[Any] = field(default_factory=set)
    lost_batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        """workers.json's entry."""
        return {"worker": self.id, "state": self.state, **{k: v for k, v in self.info.items() if k != "worker"},
                "batches_in_flight": len(self.batches),
                **{k: v for k, v in self.counters.items() if k not in ("worker", "totals")}}


#: Released worker actors kept for the next run of this driver process (``reuse_workers``), by
#: (Ray job, cpus_per_worker, batches_per_worker): an actor of another job or shape is never reused.
IDLE_WORKERS: dict[tuple[str, float, int], list[Any]] = {}
#: The limit authority and cache service of the last such run, by Ray job (reset for the next).
IDLE_SERVICES: dict[str, tuple[Any, Any]] = {}


def run_totals(reports: list[dict[str, Any]], lost: dict[str, dict[str, Any]]) -> tuple[Any, dict[str, int]]:
    """run.json's engine totals: the finished workers' final reports plus what each lost worker
    last reported (the ``totals`` of its last returned batch; the calls of a batch it held when
    it died never reached the driver), and the counts that say how much of it came from lost
    workers."""
    from mmat_core.run import EngineTotals

    finished = [EngineTotals.model_validate(r["totals"]) for r in reports]
    from_lost = [EngineTotals.model_validate(c["totals"]) for c in lost.values() if "totals" in c]
    lost_sum = EngineTotals.sum(from_lost)
    tokens = sum(u.prompt_tokens + u.completion_tokens for u in lost_sum.usage_by_stage.values())
    counts = ({"lost_workers_counted": len(from_lost), "model_calls_of_lost_workers": lost_sum.model_calls,
               "cached_calls_of_lost_workers": lost_sum.cached_calls, "tokens_of_lost_workers": tokens}
              if from_lost else {})
    return EngineTotals.sum(finished + from_lost), counts


def stop_kept_actors() -> int:
    """Kill the actors that ``reuse_workers`` runs kept (workers and services); returns how many.
    Ray kills them too when the driver disconnects."""
    import ray

    actors = [a for pool in IDLE_WORKERS.values() for a in pool] + [a for pair in IDLE_SERVICES.values() for a in pair]
    IDLE_WORKERS.clear()
    IDLE_SERVICES.clear()
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001, S110 - gone already
            pass
    return len(actors)


#: One sample handed to a worker: (seq, SourceSample, dedup key, source fingerprint).
Item = tuple[int, Any, "int | None", int]


class ClusterRun:
    """One invocation's work on the cluster: the workers, the shared services, the queue."""

    def __init__(self, executor: RayExecutor, pipeline: Pipeline, out_dir: Path, store: RunStore, ray: Any) -> None:
        self.options = executor.options
        self.pipeline = pipeline
        self.out_dir = out_dir
        self.store = store
        self.ray = ray
        self.count = executor.worker_count(ray)
        config = pipeline.config
        self.samples_per_worker = self.options.samples_per_worker or max(1, config.engine.concurrency // self.count)
        self.batch_size = self.options.batch_size or max(1, math.ceil(self.samples_per_worker / 2))
        self.workers: dict[str, WorkerSlot] = {}
        self.outstanding: dict[Any, tuple[str, list[Item]]] = {}
        self.retry: deque[list[Item]] = deque()
        self.lost: list[str] = []
        self.requeued_samples = 0
        self.counts: dict[str, int] = {"read": 0, "rejected": 0, "generated": 0, "skipped_finished": 0}
        self.started = time.monotonic()
        self._next_id = 0
        self._state_written = 0.0
        self._committed = time.monotonic()
        self.tools_report: dict[str, Any] = {}
        self.limits: dict[str, Any] = {}
        manager = pipeline.plugins
        self.allow = sorted(manager.allow) if manager.allow is not None else None
        self.block = sorted(manager.block)
        self.in_code = in_code_plugins(manager)
        self.config = config.model_dump(mode="json")
        self.config["engine"]["concurrency"] = self.samples_per_worker
        self._start_services()
        self.tool_pools = self._start_tool_services()

    # -- services and workers ---------------------------------------------------------------

    def _start_services(self) -> None:
        from mmat_plugins.executors.ray_services import CacheService, LimitAuthority
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        # Both live on the driver's node: the cache file is in the run directory, and a worker
        # node that dies must not take the cluster's budget with it.
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        cfg = self.pipeline.config
        cache_path = Path(cfg.engine.cache_path) if cfg.engine.cache_path else self.out_dir / "cache.sqlite"
        idle = IDLE_SERVICES.pop(self.pool_key()[0], None) if self.options.reuse_workers else None
        if idle is not None:
            try:  # the last run's services, emptied for this one
                ray.get([idle[0].reset.remote(), idle[1].reopen.remote(str(cache_path.resolve()))], timeout=30)
                self.authority, self.cache = idle
                return
            except Exception:  # noqa: BLE001, S110 - gone with their node or the cluster: start new ones
                pass
        service = {"num_cpus": 0, "max_concurrency": 10_000, "scheduling_strategy": here}
        self.authority = ray.remote(LimitAuthority).options(**service).remote()
        self.cache = ray.remote(CacheService).options(**service).remote(str(cache_path.resolve()))

    def _start_tool_services(self) -> dict[str, list[Any]]:
        """The replicas of each tool named in ``tool_services`` (placed wherever Ray finds the GPUs)."""
        from mmat_plugins.executors.ray_tools import ToolService

        specs = {spec.name: spec for spec in self.pipeline.config.tools}
        pools: dict[str, list[Any]] = {}
        for name, options in self.options.tool_services.items():
            if name not in specs:
                raise ConfigError(f"tool_services names {name!r}, which is not among the build's tools "
                                  f"({', '.join(sorted(specs)) or 'none'})", key=f"executor.tool_services.{name}")
            actor = self.ray.remote(ToolService).options(num_cpus=options.num_cpus, num_gpus=options.num_gpus,
                                                         max_concurrency=10_000, max_restarts=-1)
            pools[name] = [actor.remote(specs[name].model_dump(mode="json"), self.allow, self.block, self.in_code,
                                        str(self.out_dir.resolve()), self.config, options.model_dump())
                           for _ in range(options.replicas)]
        return pools

    def tool_service_stats(self) -> dict[str, Any]:
        """Each tool service's replicas: calls, batch sizes, utilisation."""
        stats: dict[str, Any] = {}
        for name, replicas in self.tool_pools.items():
            try:
                stats[name] = self.ray.get([r.stats.remote() for r in replicas], timeout=30)
            except Exception as exc:  # noqa: BLE001 - a report, not the run: say what happened
                stats[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return stats

    def start_worker(self) -> WorkerSlot:
        """Start one more worker actor (it becomes ``running`` once its engine is open)."""
        from mmat_plugins.executors.ray_worker import SampleWorker

        worker_id = f"w{self._next_id}"
        self._next_id += 1
        args = (worker_id, self.config, self.allow, self.block, self.in_code, str(self.out_dir.resolve()),
                self.authority, self.cache, self.samples_per_worker, self.tool_pools)
        idle = IDLE_WORKERS.get(self.pool_key(), []) if self.options.reuse_workers else []
        if idle:  # a released worker of an earlier run: a dead one is lost in _started and replaced
            actor = idle.pop()
            slot = WorkerSlot(worker_id, actor, actor.reopen.remote(*args))
        else:
            actor = self.ray.remote(SampleWorker).options(
                num_cpus=self.options.cpus_per_worker, max_concurrency=self.options.batches_per_worker + 3,
                max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD",
            ).remote(*args)
            slot = WorkerSlot(worker_id, actor, actor.ready.remote())
        self.workers[worker_id] = slot
        return slot

    def pool_key(self) -> tuple[str, float, int]:
        """Which released workers this run may reuse (IDLE_WORKERS)."""
        return (self.ray.get_runtime_context().get_job_id(), self.options.cpus_per_worker, self.options.batches_per_worker)

    def running(self) -> list[WorkerSlot]:
        """The workers that take batches now, the least busy first."""
        return sorted((w for w in self.workers.values() if w.state == "running"), key=lambda w: len(w.batches))

    # -- the stream -------------------------------------------------------------------------

    def stream(self, finished: dict[str, int]) -> Iterator[Item]:
        """The curated stream's unfinished samples, numbered; quarantined rows are recorded and
        finished samples skipped on the way."""
        from mmat_core.curation import Curator
        from mmat_core.models import Rejected
        from mmat_core.resume import sample_fingerprint
        from mmat_core.run import run_image_store

        pipeline, store, counts = self.pipeline, self.store, self.counts
        images = run_image_store(self.out_dir, pipeline.config)
        for source in pipeline.sources:  # sources that read embedded image bytes write them here
            source.image_store = images
        curator = Curator(pipeline.config.curation, pipeline.sources, record_keys=True)
        seq = 0
        for row in pipeline.iter_samples(curator):
            if isinstance(row, Rejected):
                counts["rejected"] += 1
                store.add_rejected(row)
                continue
            seq += 1
            counts["read"] += 1
            dedup = curator.keys.pop(row.id, None)
            if row.id in finished:
                counts["skipped_finished"] += 1
                continue
            yield seq, row, dedup, sample_fingerprint(row)
        store.set_meta("stream_total", seq)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, finished: dict[str, int]) -> None:
        """Build every unfinished sample on the workers and store it."""
        ray = self.ray
        items = self.stream(finished)
        exhausted = False
        waiting: dict[int, tuple[int | None, int]] = {}  # seq -> (dedup, fingerprint) of samples handed out
        crashed: list[BaseException] = []
        for _ in range(self.count):
            self.start_worker()
        self._progress_started()

        def next_batch() -> list[Item] | None:
            nonlocal exhausted
            if self.retry:
                return self.retry.popleft()
            if exhausted or crashed:
                return None
            batch = []
            for item in items:
                batch.append(item)
                waiting[item[0]] = (item[2], item[3])
                if len(batch) >= self.batch_size:
                    break
            else:
                exhausted = True
            return batch or None

        while True:
            # Hand out batches: the least busy running worker first, up to its share.
            for worker in self.running():
                while len(worker.batches) < self.options.batches_per_worker:
                    batch = next_batch()
                    if batch is None:
                        break
                    ref = worker.actor.build.remote([(seq, sample) for seq, sample, _, _ in batch])
                    worker.batches.add(ref)
                    self.outstanding[ref] = (worker.id, batch)
            starting = {w.ready: w for w in self.workers.values() if w.state == "starting"}
            if not self.outstanding and (crashed or (exhausted and not self.retry)):
                break
            if not self.outstanding and not any(w.state == "running" for w in self.workers.values()):
                if not starting:
                    raise MmatError(f"every Ray worker of the run was lost ({', '.join(self.lost)}); the finished "
                                    f"samples are stored: rerun the same command to resume")
                oldest = min(w.created for w in starting.values())
                if time.monotonic() - oldest > self.options.start_timeout_s:
                    raise MmatError(f"no Ray worker started within {self.options.start_timeout_s:g}s (does the "
                                    f"cluster have {self.options.cpus_per_worker:g} free CPU per worker?); the "
                                    "finished samples are stored: rerun to resume")
            done, _ = ray.wait([*self.outstanding, *starting], num_returns=1, timeout=STATE_EVERY_S)
            for ref in done:
                if ref in starting:
                    self._started(starting[ref], ref)
                else:
                    self._collect(ref, waiting, crashed)
            self._housekeeping()
        self.store.flush()
        if crashed:
            raise crashed[0]

    def _started(self, worker: WorkerSlot, ref: Any) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        try:
            worker.info = self.ray.get(ref)
            worker.state = "running"
        except RayTaskError as exc:  # the worker could not open its engine (a plugin, a config)
            worker.state = "failed"
            raise exc.as_instanceof_cause() from None
        except RayActorError:
            self._lose(worker, "could not start")

    def _collect(self, ref: Any, waiting: dict[int, tuple[int | None, int]], crashed: list[BaseException]) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        worker_id, batch = self.outstanding.pop(ref)
        worker = self.workers[worker_id]
        worker.batches.discard(ref)
        try:
            result = self.ray.get(ref)
        except RayActorError:
            # The worker (or its node) died: its batch goes back to the front of the queue.
            self.retry.appendleft(batch)
            self.requeued_samples += len(batch)
            worker.lost_batches += 1
            self._lose(worker, "died")
            return
        except RayTaskError as exc:  # a bug while building a sample: stop feeding, keep what finished
            crashed.append(exc.as_instanceof_cause())
            return
        worker.counters = result["state"]
        for seq, trace in result["traces"]:
            if seq not in waiting:
                continue  # stored already (a batch answered twice never writes twice)
            dedup, fingerprint = waiting.pop(seq)
            self.store.add_trace(seq, trace, dedup, fingerprint)
            self.counts["generated"] += 1
            if self.pipeline.progress:
                self.pipeline.progress({"done": self.counts["generated"], "status": trace.status,
                                        "rejected": self.counts["rejected"]})
        if self.store.pending >= COMMIT_EVERY:
            self.store.flush()
            self._committed = time.monotonic()

    def _lose(self, worker: WorkerSlot, why: str) -> None:
        if worker.state == "lost":
            return
        worker.state = "lost"
        self.lost.append(f"{worker.id} {why}")
        self.authority.forget_worker.remote(worker.id)  # the slots it held are free again
        if self.options.replace_lost_workers:
            self.start_worker()

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._committed >= STATE_EVERY_S and self.store.pending:
            self.store.flush()
            self._committed = now
        if now - self._state_written >= STATE_EVERY_S:
            self.write_state(complete=False)
            self._state_written = now

    # -- reporting --------------------------------------------------------------------------

    def limits_snapshot(self) -> dict[str, Any]:
        """The shared limits now (empty if the authority does not answer at once)."""
        try:
            return self.ray.get(self.authority.snapshot.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - a report: the run goes on without it
            return {}

    def write_state(self, *, complete: bool) -> None:
        """workers.json: each worker's state and the shared limits (for ``mmat status``)."""
        from mmat_core.writers import write_json_atomic

        self.limits = self.limits_snapshot()
        write_json_atomic(self.out_dir / WORKERS_FILE, {
            "complete": complete,
            "updated": time.time(),
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "samples_generated": self.counts["generated"],
            "samples_requeued": self.requeued_samples,
            "queued_batches": len(self.retry),
            "workers": [w.as_dict() for w in self.workers.values()],
            "lost": self.lost,
            "limits": self.limits,
        })

    def snapshot(self) -> dict[str, Any]:
        """The live progress display's picture of the cluster: the workers' counters summed."""
        totals: dict[str, Any] = {"in_flight": 0, "calls_made": 0, "cached_calls": 0, "failed_calls": 0,
                                  "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        for worker in self.workers.values():
            for key in totals:
                totals[key] += worker.counters.get(key, 0)
        elapsed = max(1e-9, time.monotonic() - self.started)
        limits = next(iter(self.limits.values()), {})  # as of the last workers.json: no call to the cluster here
        return {**totals, "calls_per_s": totals["calls_made"] / elapsed, "admission_limit": limits.get("admission_limit", "?"),
                "errors": {}, "binding": "server", "binding_share": 0.0, "breaker": "closed",
                "workers": sum(1 for w in self.workers.values() if w.state == "running")}

    def _progress_started(self) -> None:
        if self.pipeline.progress:
            self.pipeline.progress({"event": "started", "snapshot": self.snapshot})

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Collect each running worker's report, stop the workers and the services; returns the
        reports and the shared limits' final picture."""
        ray = self.ray
        running = [w for w in self.workers.values() if w.state == "running"]
        reports = []
        for worker, ref in [(w, w.actor.report.remote()) for w in running]:
            try:
                reports.append(ray.get(ref))
                worker.counters = reports[-1]["state"]
                worker.state = "done"
            except Exception:  # noqa: BLE001 - it died at the end: its batches were all stored
                worker.state = "lost"
        limits = self.limits_snapshot()
        self.tools_report = self.tool_service_stats()
        self.close()
        return reports, limits

    def close(self) -> None:
        """Stop every worker and the services (the cache service commits and closes its file first)."""
        ray = self.ray
        for worker in self.workers.values():
            if worker.state in ("running", "done"):
                try:
                    if self.options.reuse_workers:
                        ray.get(worker.actor.release.remote(), timeout=30)
                        IDLE_WORKERS.setdefault(self.pool_key(), []).append(worker.actor)
                        continue
                    ray.get(worker.actor.shutdown.remote(), timeout=30)
                except Exception:  # noqa: BLE001, S110 - it is killed next either way
                    pass
            ray.kill(worker.actor)
        for replicas in self.tool_pools.values():
            for replica in replicas:
                ray.kill(replica)
        try:
            ray.get(self.cache.close.remote(), timeout=120)
        except BaseException:
            ray.kill(self.cache)
            ray.kill(self.authority)
            raise
        if self.options.reuse_workers:
            IDLE_SERVICES[self.pool_key()[0]] = (self.authority, self.cache)
        else:
            ray.kill(self.cache)
            ray.kill(self.authority)


class RayExecutor(Executor):
    """Feeds the curated stream to Ray workers in small batches; one budget and one cache for all."""

    name = "ray"
    version = "2"
    description = "spread the build over a Ray cluster (pip install 'mmat[ray]'); outputs identical to local"
    Options = RayOptions

    def _init_ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'mmat[ray]'", key="executor") from None
        if not ray.is_initialized():
            options = self.options
            if options.address:
                ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False,
                         object_store_memory=options.object_store_memory)
        return ray

    def worker_count(self, ray: Any) -> int:
        """The number of workers: the ``workers`` option, else the cluster's CPUs (at least 1)."""
        if self.options.workers:
            return int(self.options.workers)
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.options.cpus_per_worker))

    def execute(self, pipeline: Pipeline, out_dir: Path) -> RunResult:
        """Run ``pipeline`` into ``out_dir`` on Ray and return its RunResult: the run phases
        *resume*, then generation on the workers, then *decide the manifest* and *publish*
        over the run's store, as the local executor does."""
        from mmat_core.run import (
            RunResult,
            decide_manifest,
            publish_outputs,
            resume,
            run_image_store,
            utc_now,
            write_engine_report,
            write_manifest,
        )
        from mmat_core.store import RunStore

        started = time.monotonic()
        started_at = utc_now()
        config = pipeline.config
        if config.llm_engine.mode == "batch":
            raise ConfigError("the ray executor sends live calls; llm_engine.mode=batch runs with the local executor",
                              key="llm_engine.mode")
        out_dir.mkdir(parents=True, exist_ok=True)
        store = RunStore.open(out_dir)
        try:
            merge_shards(store, out_dir)  # what a run of the earlier, sharded executor finished
            plan = resume(store, config, out_dir)
            if plan.applied_change:
                self._resequence(pipeline, store)
            finished = store.finished_seqs(retry_failed_calls=config.resume.retry_failed_calls)
            ray = self._init_ray()
            cluster = ClusterRun(self, pipeline, out_dir, store, ray)
            try:
                cluster.run(finished)
                reports, limits = cluster.finish()
            except BaseException:
                cluster.close()
                raise
            retired = store.drop_retired()
            # What a lost worker had reported with its last batch (its final report died with it).
            lost_counters = {w.id: w.counters for w in cluster.workers.values() if w.state == "lost" and w.counters}
            engine, lost_counts = run_totals(reports, lost_counters)
            counts = {
                **cluster.counts,
                "workers": cluster.count,
                "config_changes_applied": len(plan.changes),
                **({"workers_lost": len(cluster.lost), "samples_requeued": cluster.requeued_samples} if cluster.lost else {}),
                **({"retired_by_config_change": len(retired)} if retired else {}),
                **lost_counts,
            }
            manifest = decide_manifest(pipeline, store, counts, engine, started_at=started_at,
                                       generation_s=time.monotonic() - started)
            published = publish_outputs(pipeline, store, out_dir, manifest, run_image_store(out_dir, config))
            manifest = write_manifest(out_dir, store, manifest, published, total_s=time.monotonic() - started)
            report = {**cluster_report([r["engine"] for r in reports], limits), "executor": "ray",
                      "workers": {r["worker"]: r["engine"] for r in reports}, "shared_limits": limits,
                      "lost_workers": cluster.lost, "samples_requeued": cluster.requeued_samples,
                      "lost_worker_counters": {k: {n: v for n, v in c.items() if n != "totals"}
                                               for k, c in lost_counters.items()},
                      "tool_services": cluster.tools_report}
            write_engine_report(out_dir, report)
            cluster.write_state(complete=True)
        finally:
            store.close()
        return RunResult(out_dir, manifest, published.files, engine=report)

    @staticmethod
    def _resequence(pipeline: Any, store: Any) -> None:
        """After a configuration change: give each finished sample its place in the new stream
        before new work is numbered after it."""
        from mmat_core.models import Rejected

        finished = store.finished_seqs()
        seq = 0
        for row in pipeline.iter_samples():
            if isinstance(row, Rejected):
                continue
            seq += 1
            if row.id in finished and finished[row.id] != seq:
                store.move(row.id, seq)
        store.flush()
