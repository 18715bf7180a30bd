"""Batch execution mode: gather requests, submit them as one provider batch, poll, collect.

OpenAI's Batch API and Anthropic's Message Batches answer within hours at half the price. In
batch mode every model call of a round (all samples' first turns, then all second turns, ...)
waits until the batch holding it is collected.

Resume without paying twice: the id of every submitted batch and the cache keys it carries are
written to ``batches.json`` in the run directory right after the provider accepts it. A run
stopped while a batch is in flight finds the batch there on restart, polls and collects it, and
hands its answers to the requests that ask for the same keys: nothing is submitted again. (The
only window for a double submission is between the provider accepting a batch and that file
being written, a few milliseconds.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mmat_core.components import LLMRequest, LLMResponse
from mmat_core.engine.errors import BatchFailed, LLMCallError, PermanentError
from mmat_core.writers import write_json_atomic

if TYPE_CHECKING:
    from mmat_core.images import ImageStore

log = logging.getLogger("mmat.engine")

JOURNAL_FILE = "batches.json"


@runtime_checkable
class BatchBackend(Protocol):
    """What a backend implements to support batch mode (``openai`` and ``anthropic`` do)."""

    async def submit_batch(self, items: list[tuple[str, LLMRequest]], images: ImageStore) -> str:
        """Submit ``(custom_id, request)`` pairs as one batch; return the provider's batch id."""
        ...

    async def batch_state(self, batch_id: str) -> str:
        """``running``, ``ended`` (results ready) or ``failed`` (expired, cancelled)."""
        ...

    async def collect_batch(self, batch_id: str) -> dict[str, LLMResponse | LLMCallError]:
        """Each custom id's answer, or the error the provider reported for it."""
        ...


class BatchJournal:
    """``batches.json``: submitted batches and the keys they carry, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches: list[dict[str, Any]] = []
        if path.exists():
            try:
                self.batches = json.loads(path.read_text(encoding="utf-8")).get("batches", [])
            except (ValueError, OSError) as exc:
                raise PermanentError(f"{path} is unreadable ({exc}); it lists submitted batches: "
                                     "restore it or delete it to submit them again") from None

    def add(self, batch_id: str, backend: str, model: str, keys: list[str]) -> None:
        """Record a submitted batch."""
        self.batches.append({"id": batch_id, "backend": backend, "model": model, "keys": keys,
                             "state": "running", "submitted_at": time.time()})
        self.save()

    def mark(self, batch_id: str, state: str) -> None:
        """Record a batch's new state (``collected`` or ``failed``)."""
        for batch in self.batches:
            if batch["id"] == batch_id:
                batch["state"] = state
        self.save()

    def running(self, backend: str, model: str) -> list[dict[str, Any]]:
        """Batches of this backend and model not yet collected."""
        return [b for b in self.batches if b["state"] == "running" and b["backend"] == backend and b["model"] == model]

    def save(self) -> None:
        """Write the journal atomically."""
        write_json_atomic(self.path, {"batches": self.batches})


class BatchRunner:
    """Turns single calls into provider batches for one backend (see the module docstring)."""

    def __init__(self, backend: Any, images: ImageStore, journal: BatchJournal, *, max_requests: int = 10_000,
                 window_s: float = 2.0, poll_s: float = 30.0,
                 submit_with: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None) -> None:
        if not isinstance(backend, BatchBackend):
            raise PermanentError(f"the {backend.name} backend has no batch API; set llm_engine.mode: online")
        self.backend = backend
        self.images = images
        self.journal = journal
        self.max_requests = max_requests
        self.window_s = window_s
        self.poll_s = poll_s
        self._submit_with = submit_with
        self._pending: list[tuple[str, LLMRequest]] = []
        self._futures: dict[str, asyncio.Future[LLMResponse]] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.submitted = 0
        self.collected = 0
        self.resumed = 0
        self.in_flight_batches = 0

    def resume(self) -> int:
        """Start collecting batches left running by an earlier, stopped run; returns how many."""
        batches = self.journal.running(self.backend.name, self.backend.model)  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        for batch in batches:
            for key in batch["keys"]:
                self._futures.setdefault(key, loop.create_future())
            self._watch(batch["id"], batch["keys"])
            self.resumed += 1
            log.info("batch mode: collecting batch %s left running by an earlier run (%d requests)", batch["id"], len(batch["keys"]))
        return len(batches)

    async def complete(self, key: str, request: LLMRequest) -> LLMResponse:
        """The answer to ``request`` (``key`` is its cache key) once its batch is collected."""
        future = self._futures.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._futures[key] = future
            self._pending.append((key, request))
            if len(self._pending) >= self.max_requests:
                self._flush_now()
            elif self._flush_task is None:
                self._flush_task = asyncio.create_task(self._flush_later())
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._futures.pop(key, None)

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.window_s)
        self._flush_task = None
        self._flush_now()

    def _flush_now(self) -> None:
        if self._flush_task is not None and self._flush_task is not asyncio.current_task():
            self._flush_task.cancel()
            self._flush_task = None
        items, self._pending = self._pending, []
        if items:
            self._spawn(self._submit(items))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, items: list[tuple[str, LLMRequest]]) -> None:
        keys = [key for key, _ in items]
        try:
            submit = lambda: self.backend.submit_batch(items, self.images)  # noqa: E731
            batch_id = await (self._submit_with(submit) if self._submit_with else submit())
            if isinstance(batch_id, tuple):  # Scheduler.run returns (result, attempts)
                batch_id = batch_id[0]
        except LLMCallError as exc:
            self._fail(keys, exc)
            return
        self.journal.add(batch_id, self.backend.name, self.backend.model, keys)  # type: ignore[attr-defined]
        self.submitted += 1
        log.info("batch mode: submitted batch %s with %d requests", batch_id, len(keys))
        self._watch(batch_id, keys)

    def _watch(self, batch_id: str, keys: list[str]) -> None:
        self._spawn(self._poll(batch_id, keys))

    async def _poll(self, batch_id: str, keys: list[str]) -> None:
        self.in_flight_batches += 1
        try:
            while True:
                try:
                    state = await self.backend.batch_state(batch_id)
                except LLMCallError as exc:
                    if not exc.retryable:
                        self._fail(keys, exc)
                        self.journal.mark(batch_id, "failed")
                        return
                    state = "running"
                if state == "ended":
                    break
                if state == "failed":
                    self._fail(keys, BatchFailed(f"batch {batch_id} ended without results (expired, cancelled or failed)"))
                    self.journal.mark(batch_id, "failed")
                    return
                await asyncio.sleep(self.poll_s)
            try:
                results = await self.backend.collect_batch(batch_id)
            except LLMCallError as exc:
                self._fail(keys, exc)
                return
            for key in keys:
                result = results.get(key) or BatchFailed(f"batch {batch_id} returned no result for this request")
                future = self._futures.get(key)
                if future is None or future.done():
                    continue
                if isinstance(result, LLMResponse):
                    future.set_result(result)
                else:
                    future.set_exception(result)
                    future.exception()  # marks it retrieved when nobody waits for it any more
            self.collected += 1
            self.journal.mark(batch_id, "collected")
        finally:
            self.in_flight_batches -= 1

    def _fail(self, keys: list[str], error: LLMCallError) -> None:
        for key in keys:
            future = self._futures.get(key)
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()

    def snapshot(self) -> dict[str, int]:
        """Counts for the progress display."""
        return {"batches_submitted": self.submitted, "batches_collected": self.collected,
                "batches_resumed": self.resumed, "batches_in_flight": self.in_flight_batches,
                "batch_requests_waiting": len(self._pending)}

    async def aclose(self) -> None:
        """Stop polling (a stopped run's batches stay in the journal and are collected next time)."""
        if self._flush_task is not None:
            self._flush_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
