"""Tools as shared services on a Ray cluster: one model per GPU, not one per worker.

A tool named under the Ray executor's ``tool_services`` runs in a pool of ``replicas`` Ray actors
(each reserving ``num_gpus`` and ``num_cpus``) instead of inside every worker. Calls from every
sample of every worker go to the pool (round robin over its replicas); a replica gathers the
calls that arrive within ``max_wait_ms`` (up to ``max_batch``) and runs them as one batch with
the tool's ``Tool.run_batch(calls)`` (``[(args, ToolContext), ...]`` in, outputs in order out):
one forward pass where the tool's model batches (label_bbox with the transformers detector), else
the calls concurrently (the base class's default). Each replica counts its calls, batches, batch sizes and the share of its time it was
busy (utilisation); the driver writes them to ``engine.json``.

The worker keeps its own instance of the tool for everything but running it (name, version,
options, cache key), so cache keys and outputs are the same as with the tool in the worker; the
per-sample ``scratch`` space does not cross to the service (a tool that reads another tool's
scratch must stay in the workers).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mmat_core.models import DEFER_BUILD

if TYPE_CHECKING:  # the methods import it: `mmat plugins` imports this module and runs none of them
    import asyncio


class ToolServiceOptions(BaseModel):
    """How one tool runs as a service (``executor.tool_services.<tool>``)."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)
    replicas: int = Field(1, ge=1, description="actors in the pool (one per GPU for a GPU model)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs each replica reserves")
    num_cpus: float = Field(0.0, ge=0, description="CPUs each replica reserves")
    max_batch: int = Field(16, ge=1, description="most calls run as one batch")
    max_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits for more calls after its first")


class ToolService:
    """One replica: the tool, loaded once, and a batcher in front of it (an asyncio Ray actor)."""

    def __init__(self, spec: dict[str, Any], allow: list[str] | None, block: list[str],
                 in_code: list[tuple[str, str, bytes]], out_dir: str, config: dict[str, Any],
                 options: dict[str, Any]) -> None:
        from mmat_plugins.executors.ray_worker import load_in_code_plugins

        from mmat_core.config import PipelineConfig
        from mmat_core.plugins import PluginManager
        from mmat_core.run import run_image_store
        from mmat_core.run.assembly import create_component

        manager = PluginManager(allow=allow, block=block)
        load_in_code_plugins(manager, in_code)
        self.tool: Any = create_component("tool", spec, key=f"tools.{spec['name']}", plugins=manager)
        self.tool.prepare()  # the model is loaded here, once per replica
        self.images = run_image_store(Path(out_dir), PipelineConfig.model_validate(config))
        self.options = ToolServiceOptions.model_validate(options)
        self.queue: asyncio.Queue[tuple[dict[str, Any], Any, asyncio.Future[Any]]] | None = None
        self.runner: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        self.calls = 0
        self.batches = 0
        self.busy_s = 0.0
        self.sizes: dict[int, int] = {}

    async def call(self, args: dict[str, Any], sample: Any) -> Any:
        """Run the tool on ``sample`` with ``args`` (in the next batch); returns its ToolOutput."""
        import asyncio

        if self.queue is None:
            self.queue = asyncio.Queue()
            self.runner = asyncio.get_running_loop().create_task(self._batches())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((args, sample, future))
        return await future

    async def _batches(self) -> None:
        import asyncio

        from mmat_core.components import ToolContext

        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while len(batch) < self.options.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            started = time.monotonic()
            contexts = [(args, ToolContext(sample=sample, images=self.images)) for args, sample, _ in batch]
            try:
                # Tool.run_batch: one model pass where the tool batches, else its calls concurrently.
                outputs = list(await self.tool.run_batch(contexts))
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: each caller gets the error
                outputs = [exc] * len(batch)
            self.busy_s += time.monotonic() - started
            self.calls += len(batch)
            self.batches += 1
            self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
            for (_, _, future), output in zip(batch, outputs):
                if future.done():
                    continue
                if isinstance(output, BaseException):
                    future.set_exception(output)
                else:
                    future.set_result(output)

    async def stats(self) -> dict[str, Any]:
        """Calls, batches, batch sizes and utilisation (busy time over the replica's life)."""
        elapsed = max(1e-9, time.monotonic() - self.started)
        return {"calls": self.calls, "batches": self.batches,
                "mean_batch": round(self.calls / self.batches, 2) if self.batches else 0.0,
                "largest_batch": max(self.sizes, default=0),
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
                "utilisation": round(self.busy_s / elapsed, 3), "busy_s": round(self.busy_s, 3)}


class ToolPool:
    """A worker's handle on one tool's replicas: round robin."""

    def __init__(self, replicas: list[Any]) -> None:
        self.replicas = replicas
        self._next = itertools.cycle(range(len(replicas)))

    async def run(self, args: dict[str, Any], ctx: Any) -> Any:
        """The tool's ``run``, on the next replica."""
        return await self.replicas[next(self._next)].call.remote(args, ctx.sample)


def serve_tools(tools: list[Any], pools: dict[str, list[Any]]) -> None:
    """Make each of ``tools`` named in ``pools`` run on its service: its ``run`` goes to the pool
    and its ``prepare`` loads nothing here (the replicas hold the model)."""
    for tool in tools:
        replicas = pools.get(tool.name)
        if replicas:
            pool = ToolPool(replicas)
            tool.run = pool.run
            tool.prepare = lambda: None
