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
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from pydantic import Field

from mmat_core.components import ComponentOptions, Executor
from mmat_core.errors import ConfigError, MmatError

if TYPE_CHECKING:
    from mmat_core.pipeline import Pipeline, RunResult

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
    """Build one shard in this process (the body of a Ray task); returns its counters."""
    from mmat_core.config import PipelineConfig
    from mmat_core.pipeline import LocalRun, Pipeline
    from mmat_core.plugins import PluginManager, set_plugin_manager

    manager = PluginManager(allow=allow, block=block)
    set_plugin_manager(manager)
    pipeline = Pipeline.from_config(PipelineConfig.model_validate(config), plugins=manager)
    root = Path(out_dir)
    run = LocalRun(pipeline, root, shard=(index, count), work_dir=shard_dir(root, index), publish=False)
    asyncio.run(run.run())
    client = run.client
    stats = getattr(getattr(client, "scheduler", None), "stats", None)
    return {
        "index": index,
        "counts": dict(run.counts),
        "model_calls": run.model_calls,
        "tool_errors": run.tool_errors,
        "client": _numbers(client),
        "stats": _numbers(stats),
        "usage_by_stage": {k: u.model_dump() for k, u in (getattr(client, "usage_by_stage", None) or {}).items()},
    }


def _numbers(obj: Any) -> dict[str, float]:
    """The numeric attributes of an object (a client's or a scheduler's counters)."""
    if obj is None:
        return {}
    items = vars(obj).items() if hasattr(obj, "__dict__") else ()
    return {k: v for k, v in items if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("_")}


class Totals:
    """Counters summed over workers, read like the engine client the run report is built from
    (an attribute no worker reported reads as 0)."""

    def __init__(self, values: dict[str, float], **children: Any) -> None:
        self._values = values
        self._children = children

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._children:
            return self._children[name]
        return self._values.get(name, 0)

    @classmethod
    def over(cls, reports: list[dict[str, Any]]) -> Totals:
        """The totals of the workers' reports."""
        from mmat_core.models import Usage

        def add(key: str) -> dict[str, float]:
            total: dict[str, float] = {}
            for report in reports:
                for name, value in report[key].items():
                    total[name] = total.get(name, 0) + value
            return total

        usage: dict[str, Usage] = {}
        for report in reports:
            for stage, data in report["usage_by_stage"].items():
                usage.setdefault(stage, Usage()).add(Usage.model_validate(data))
        client = add("client")
        client["calls_made"] = sum(r["model_calls"] for r in reports)
        return cls(client, scheduler=cls({}, stats=cls(add("stats"))), usage_by_stage=usage)


def merge_shards(store: Any, out_dir: Path) -> int:
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
        """Run ``pipeline`` into ``out_dir`` on Ray and return its RunResult."""
        from mmat_core.pipeline import LocalRun, RunResult
        from mmat_core.resume import prepare_resume
        from mmat_core.store import RunStore
        from mmat_core.writers import write_json_atomic

        started = time.monotonic()
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out_dir.mkdir(parents=True, exist_ok=True)
        config = pipeline.config
        store = RunStore.open(out_dir)
        try:
            merge_shards(store, out_dir)  # what a crashed earlier run finished
            plan = prepare_resume(store, config, run_dir=out_dir)
            store.clear_rejected()  # worker 0 reads the whole stream and records them again
            store.set_meta("complete", False)
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
            run = LocalRun(pipeline, out_dir)
            retired = store.drop_retired()
            run.counts = {
                "read": reports[0]["counts"].get("read", 0),
                "rejected": reports[0]["counts"].get("rejected", 0),
                "generated": sum(r["counts"].get("generated", 0) for r in reports),
                "skipped_finished": sum(r["counts"].get("skipped_finished", 0) for r in reports),
                "workers": count,
                "config_changes_applied": len(plan.changes),
                **({"retired_by_config_change": len(retired)} if retired else {}),
            }
            store.set_meta("stream_total", run.counts["read"])
            generation_s = time.monotonic() - started
            outputs = run._write_outputs(store)
            tool_errors: dict[str, int] = {}
            for report in reports:
                for name, n in report["tool_errors"].items():
                    tool_errors[name] = tool_errors.get(name, 0) + n
            client = Totals.over(reports)
            runner = SimpleNamespace(errors=tool_errors)
            manifest = run._manifest(store, client, runner, started_at, generation_s,  # type: ignore[arg-type]
                                     time.monotonic() - started, outputs)
            write_json_atomic(out_dir / "run.json", manifest.model_dump(mode="json"))
            store.set_meta("complete", True)
        finally:
            store.close()
        return RunResult(out_dir, manifest, outputs)

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
