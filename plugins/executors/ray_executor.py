"""The ``ray`` executor: the same pipeline spread over the workers of a Ray cluster.

How a run is split and put back together:

1. The driver prepares the run directory exactly as the local executor does (resume plan, config
   change policy) and merges any worker stores a crashed earlier run left behind.
2. Worker ``i`` of ``n`` reads the same curated stream and builds only the samples whose position
   ``seq`` satisfies ``(seq - 1) % n == i``: the split depends on nothing but the stream, so it is
   the same on every run. Each worker runs the ordinary engine with its own store and cache under
   ``RUN_DIR/shards/<i>/`` and skips what the run's main store already holds.
3. The rate limits of the configuration are divided between the workers (concurrency, requests and
   tokens per minute), so together they never exceed what was configured.
4. The driver merges the worker stores into the main store and writes the outputs from it in
   ``seq`` order with the same writers as the local executor: the same input gives byte-identical
   RR/ORR/quarantine files whichever executor built them.

Ray is imported only when this executor runs (``pip install 'mmat[ray]'``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from mmat_core.components import ComponentOptions, Executor
from mmat_core.errors import ConfigError, MmatError

if TYPE_CHECKING:
    from mmat_core.pipeline import Pipeline
    from mmat_core.run import RunResult
    from mmat_core.store import RunStore

#: Option names (anywhere under ``engine``, ``llm`` and ``llm_engine``) that are limits shared by the whole run.
RATE_LIMIT_KEYS = frozenset({
    "concurrency", "max_concurrency", "rpm", "tpm", "requests_per_minute", "tokens_per_minute",
    "max_requests_per_minute", "max_tokens_per_minute",
})


class RayOptions(ComponentOptions):
    """Options of the Ray executor."""

    address: str | None = Field(None, description="cluster to join (ray://host:10001, auto); none starts a local Ray")
    workers: int | None = Field(None, ge=1, description="number of shards; default: the cluster's CPU count")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started Ray (ignored with address)")
    object_store_memory: int | None = Field(256 * 1024 * 1024, ge=78_643_200,
                                            description="object store bytes of a locally started Ray")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker task")


def split_limits(config: dict[str, Any], workers: int) -> dict[str, Any]:
    """A copy of a config dict with every shared rate limit under ``engine``, ``llm`` and ``llm_engine`` divided
    by ``workers`` (at least 1 each), so the workers together keep to the configured limits."""

    def divide(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in RATE_LIMIT_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[key] = max(1, int(value) // workers) if isinstance(value, int) else value / workers
                else:
                    out[key] = divide(value)
            return out
        if isinstance(node, list):
            return [divide(v) for v in node]
        return node

    result = dict(config)
    for section in ("engine", "llm", "llm_engine"):
        if section in result:
            result[section] = divide(result[section])
    return result


def shard_dir(out_dir: Path, index: int) -> Path:
    """Where worker ``index`` keeps its store and cache."""
    return out_dir / "shards" / str(index)


def run_shard(config: dict[str, Any], allow: list[str] | None, block: list[str], out_dir: str, index: int,
              count: int) -> dict[str, Any]:
    """Build one shard in this process (the body of a Ray task): the run phases *prepare* (with
    the shard and the worker's own folder) and *generate*; returns its counts and engine totals
    (JSON, for the driver)."""
    from mmat_core.config import PipelineConfig
    from mmat_core.pipeline import Pipeline
    from mmat_core.plugins import PluginManager, set_plugin_manager
    from mmat_core.run import Shard, close, generate, prepare, run_gc

    manager = PluginManager(allow=allow, block=block)
    set_plugin_manager(manager)
    pipeline = Pipeline.from_config(PipelineConfig.model_validate(config), plugins=manager)
    root = Path(out_dir)

    async def build() -> dict[str, Any]:
        run = prepare(pipeline, root, shard=Shard(index, count), work_dir=shard_dir(root, index))
        try:
            await generate(run)
            return {"index": index, "counts": dict(run.counts), "engine": run.engine_totals().model_dump(mode="json")}
        finally:
            await close(run)

    with run_gc(pipeline.config.engine.gc_threshold):
        return asyncio.run(build())


def merge_shards(store: RunStore, out_dir: Path) -> int:
    """Merge every worker store under ``out_dir/shards`` into ``store`` (lowest index first), then
    delete the worker stores (their caches stay for the next run); returns samples merged."""
    from mmat_core.store import STORE_FILE

    merged = 0
    paths = sorted((out_dir / "shards").glob(f"*/{STORE_FILE}"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for path in paths:
        merged += store.merge(path)
    for path in paths:  # only once everything is committed in the main store
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return merged


class RayExecutor(Executor):
    """Shards the curated stream over Ray workers; merges their stores deterministically."""

    name = "ray"
    version = "1"
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
        """The number of shards: the ``workers`` option, else the cluster's CPUs (at least 1)."""
        if self.options.workers:
            return int(self.options.workers)
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.options.cpus_per_worker))

    def execute(self, pipeline: Pipeline, out_dir: Path) -> RunResult:
        """Run ``pipeline`` into ``out_dir`` on Ray and return its RunResult: the run phases
        *resume* (here), *prepare* and *generate* (in each worker, on its shard), then *decide
        the manifest* and *publish* over the merged store (here), as the local executor does."""
        from mmat_core.run import (
            EngineTotals,
            RunResult,
            decide_manifest,
            publish_outputs,
            resume,
            run_image_store,
            utc_now,
            write_manifest,
        )
        from mmat_core.store import RunStore

        started = time.monotonic()
        started_at = utc_now()
        out_dir.mkdir(parents=True, exist_ok=True)
        config = pipeline.config
        store = RunStore.open(out_dir)
        try:
            merge_shards(store, out_dir)  # what a crashed earlier run finished
            plan = resume(store, config, out_dir)  # worker 0 reads the whole stream and records rejects again
            if plan.applied_change:
                self._resequence(pipeline, store)
        finally:
            store.close()

        ray = self._init_ray()
        count = self.worker_count(ray)
        worker_config = split_limits(config.model_dump(mode="json"), count)
        manager = pipeline.plugins
        allow = sorted(manager.allow) if manager.allow is not None else None
        task = ray.remote(num_cpus=self.options.cpus_per_worker, max_retries=0)(run_shard)
        refs = [task.remote(worker_config, allow, sorted(manager.block), str(out_dir), i, count) for i in range(count)]
        reports = sorted(ray.get(refs), key=lambda r: r["index"])

        store = RunStore.open(out_dir)
        try:
            merged = merge_shards(store, out_dir)
            generated = sum(r["counts"].get("generated", 0) for r in reports)
            if merged < generated:
                # The workers wrote their stores where the driver cannot see them.
                raise MmatError(
                    f"the Ray workers finished {generated} samples but only {merged} reached {out_dir}/shards: "
                    "on a cluster the run directory must be on storage every node shares (NFS, a mounted bucket); "
                    "the finished work is in each node's copy of that folder"
                )
            retired = store.drop_retired()
            counts = {
                "read": reports[0]["counts"].get("read", 0),
                "rejected": reports[0]["counts"].get("rejected", 0),
                "generated": generated,
                "skipped_finished": sum(r["counts"].get("skipped_finished", 0) for r in reports),
                "workers": count,
                "config_changes_applied": len(plan.changes),
                **({"retired_by_config_change": len(retired)} if retired else {}),
            }
            store.set_meta("stream_total", counts["read"])
            engine = EngineTotals.sum([EngineTotals.model_validate(r["engine"]) for r in reports])
            manifest = decide_manifest(pipeline, store, counts, engine, started_at=started_at,
                                       generation_s=time.monotonic() - started)
            published = publish_outputs(pipeline, store, out_dir, manifest, run_image_store(out_dir, config))
            manifest = write_manifest(out_dir, store, manifest, published, total_s=time.monotonic() - started)
        finally:
            store.close()
        return RunResult(out_dir, manifest, published.files)

    @staticmethod
    def _resequence(pipeline: Any, store: Any) -> None:
        """After a configuration change: give each finished sample its place in the new stream
        (workers only skip finished samples; the main store's order is the driver's job)."""
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
