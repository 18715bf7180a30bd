"""A Ray run's worker: an actor that builds the batches of samples the driver hands it.

Each worker holds one engine for the whole run (model-call client, tool runner, rationale loop,
reflection stage: :func:`mmat_core.run.open_engine`) on an event loop of its own thread, so
several batches can be in flight at once and share ``samples_in_flight``. The engine's cache is
the run's cache service and its scheduler takes slots and quota from the run's limit authority
(ray_services.py). A batch's result is returned only once the cache service has committed every
call its samples made: the driver stores the traces after that, so a stored trace's calls are
always in the cache first.

Plugins registered in code on the driver (the ``Pipeline`` API) are sent along pickled and
registered here too; one that cannot be unpickled here (its module is not installed on this
node) stops the run with a message saying to install it as a distribution.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
import types
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from mmat_core.errors import MmatError

T = TypeVar("T")

#: How the driver names the plugins it sends (its message, shown by the worker that fails).
IN_CODE_HINT = ("install it as a distribution with an `mmat` entry point on every node "
                "(docs/plugins/authoring.md), or use the local executor")


class PluginTransferError(MmatError):
    """A plugin registered in code could not reach a Ray worker."""


def load_in_code_plugins(manager: Any, blobs: list[tuple[str, str, bytes]]) -> None:
    """Register the pickled in-code plugins ``(name, version, pickle)`` with ``manager``."""
    from ray import cloudpickle

    for name, version, blob in blobs:
        try:
            plugin = cloudpickle.loads(blob)
        except Exception as exc:  # noqa: BLE001 - whatever unpickling raises, the message says what to do
            raise PluginTransferError(
                f"plugin {name!r} was registered in code on the driver and cannot be loaded on Ray worker "
                f"{socket.gethostname()} ({type(exc).__name__}: {exc}): {IN_CODE_HINT}") from None
        manager.register(plugin, name, version)


# The coroutines live outside SampleWorker: a Ray actor class with an ``async def`` method is an
# asyncio actor, which would run the blocking ``build`` calls on its one loop, a batch at a time.


async def open_worker_engine(worker_id: str, config: dict[str, Any], allow: list[str] | None, block: list[str],
                             in_code: list[tuple[str, str, bytes]], out_dir: Path, authority: Any, cache_service: Any,
                             samples_in_flight: int, tool_pools: dict[str, list[Any]]) -> types.SimpleNamespace:
    """A worker's engine over the run's cache service and limit authority (in the worker's loop)."""
    from mmat_plugins.executors.ray_services import RemoteCache, share_limits
    from mmat_plugins.executors.ray_tools import serve_tools

    from mmat_core.config import PipelineConfig
    from mmat_core.pipeline import Pipeline
    from mmat_core.plugins import PluginManager, set_plugin_manager
    from mmat_core.run import open_engine, run_image_store

    manager = PluginManager(allow=allow, block=block)
    load_in_code_plugins(manager, in_code)
    set_plugin_manager(manager)
    pipeline = Pipeline.from_config(PipelineConfig.model_validate(config), plugins=manager)
    serve_tools(pipeline.tools, tool_pools)  # before the engine prepares them: no model loads here
    images = run_image_store(out_dir, pipeline.config)
    cache = RemoteCache(cache_service)
    # The client's own files (none outside batch mode, which the driver refuses) stay on this node.
    work_dir = Path(tempfile.mkdtemp(prefix=f"mmat-worker-{worker_id}-"))
    client, tools, loop, reflection = open_engine(pipeline, images, cache, work_dir)
    share_limits(client, authority, worker_id)
    return types.SimpleNamespace(pipeline=pipeline, client=client, tools=tools, loop=loop, reflection=reflection,
                                 cache=cache, semaphore=asyncio.Semaphore(samples_in_flight))


async def build_batch(engine: types.SimpleNamespace, batch: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Build a batch of samples with ``engine``, at most its ``samples_per_worker`` at once."""
    from mmat_core.run import build_trace

    async def one(seq: int, sample: Any) -> tuple[int, Any]:
        async with engine.semaphore:
            return seq, await build_trace(engine, sample)

    results = await asyncio.gather(*(one(seq, sample) for seq, sample in batch))
    # The driver stores these traces once they are back: their calls must be on disk first.
    await engine.cache.commit()
    return list(results)


class SampleWorker:
    """Builds batches of ``(seq, SourceSample)`` into ``(seq, Trace)`` with one engine.

    The engine belongs to a run: :meth:`release` closes it and keeps the process (its imports,
    its event loop), and :meth:`reopen` gives it the next run's engine (the executor's
    ``reuse_workers``: a later build in the same driver process skips the workers' start-up)."""

    def __init__(self, worker_id: str, config: dict[str, Any], allow: list[str] | None, block: list[str],
                 in_code: list[tuple[str, str, bytes]], out_dir: str, authority: Any, cache_service: Any,
                 samples_in_flight: int, tool_pools: dict[str, list[Any]] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mmat-ray-worker", daemon=True)
        self.thread.start()
        self.gc_policy: Any = None
        self._open(worker_id, config, allow, block, in_code, out_dir, authority, cache_service, samples_in_flight,
                   tool_pools)

    def _open(self, worker_id: str, config: dict[str, Any], allow: list[str] | None, block: list[str],
              in_code: list[tuple[str, str, bytes]], out_dir: str, authority: Any, cache_service: Any,
              samples_in_flight: int, tool_pools: dict[str, list[Any]] | None) -> None:
        self.worker_id = worker_id
        self.samples_in_flight = samples_in_flight
        self.started = time.time()
        self.done = 0
        self.batches = 0
        self.error: str | None = None
        self.engine: Any = None
        try:
            self.engine = self._call(open_worker_engine(worker_id, config, allow, block, in_code, Path(out_dir), authority,
                                                        cache_service, samples_in_flight, tool_pools or {}))
            # The run's garbage-collector policy, for this worker process's life (as in a local run).
            from mmat_core.run import run_gc

            self.gc_policy = run_gc(self.engine.pipeline.config.engine.gc_threshold)
            self.gc_policy.__enter__()
        except MmatError as exc:
            self.error = str(exc)  # said by ready(): an actor that fails in __init__ loses its message
        except Exception as exc:  # noqa: BLE001 - said by ready(), which the driver raises
            self.error = f"{type(exc).__name__}: {exc}"

    def reopen(self, worker_id: str, config: dict[str, Any], allow: list[str] | None, block: list[str],
               in_code: list[tuple[str, str, bytes]], out_dir: str, authority: Any, cache_service: Any,
               samples_in_flight: int, tool_pools: dict[str, list[Any]] | None = None) -> dict[str, Any]:
        """Open the engine of another run in this (released) worker; answers as :meth:`ready`."""
        self._open(worker_id, config, allow, block, in_code, out_dir, authority, cache_service, samples_in_flight,
                   tool_pools)
        return self.ready()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def ready(self) -> dict[str, Any]:
        """Where this worker runs; raises the error that stopped it from starting."""
        if self.error is not None:
            raise PluginTransferError(self.error) if "registered in code" in self.error else MmatError(self.error)
        import ray

        return {"worker": self.worker_id, "node": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "pid": os.getpid()}

    def build(self, batch: list[tuple[int, Any]]) -> dict[str, Any]:
        """Build a batch; returns its ``(seq, Trace)`` pairs and this worker's counters."""
        traces = self._call(build_batch(self.engine, batch))
        self.done += len(traces)
        self.batches += 1
        return {"traces": traces, "state": self.state()}

    def state(self) -> dict[str, Any]:
        """This worker's counters now (for progress, workers.json and ``mmat status``)."""
        from mmat_core.run import EngineTotals

        snap = self.engine.client.snapshot()
        # run.json's counters as of now: if this worker dies, the driver still counts what it did.
        totals = EngineTotals.of(self.engine.client, self.engine.tools).model_dump(mode="json")
        return {"worker": self.worker_id, "totals": totals, "pid": os.getpid(), "samples_done": self.done, "batches": self.batches,
                "calls_made": snap.get("calls_made", 0), "cached_calls": snap.get("cached_calls", 0),
                "in_flight": snap.get("in_flight", 0), "failed_calls": snap.get("failed_calls", 0),
                "rate_limited": snap.get("rate_limited", 0), "prompt_tokens": snap.get("prompt_tokens", 0),
                "completion_tokens": snap.get("completion_tokens", 0), "cost_usd": snap.get("cost_usd", 0.0),
                "tool_calls": dict(self.engine.tools.stats.calls),
                "uptime_s": round(time.time() - self.started, 1)}

    def report(self) -> dict[str, Any]:
        """This worker's engine totals (run.json) and its engine report (engine.json)."""
        from mmat_core.run import EngineTotals

        engine = self.engine
        return {"worker": self.worker_id, "totals": EngineTotals.of(engine.client, engine.tools).model_dump(mode="json"),
                "engine": engine.client.report(), "state": self.state()}

    def release(self) -> None:
        """Close this run's engine and keep the process for :meth:`reopen`."""
        self._close_engine()

    def shutdown(self) -> None:
        """Close the engine's connections and tool workers, and stop the event loop."""
        self._close_engine()
        self.loop.call_soon_threadsafe(self.loop.stop)

    def _close_engine(self) -> None:
        async def close() -> None:
            engine = self.engine
            await engine.client.aclose()
            engine.tools.close()
            await engine.pipeline.llm.aclose()
            if engine.pipeline.search is not None:
                await engine.pipeline.search.aclose()

        if self.error is None and self.engine is not None:
            self._call(close())
        self.engine = None
        if self.gc_policy is not None:
            self.gc_policy.__exit__(None, None, None)
            self.gc_policy = None
