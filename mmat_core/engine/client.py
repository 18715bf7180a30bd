"""The engine's LLM client: cache first, then the scheduler (or a provider batch), then the backend.

Components (the rationale loop, tools such as image_caption, critics) make every model call
through this client, so all calls are paced, cached, priced and recorded the same way:

1. The request's cache key is computed (:func:`~mmat_core.engine.cache.model_key_document`).
2. A cached answer is returned at once (cost 0, ``cached=True`` on its ModelCall).
3. An identical request already in flight is awaited instead of sent twice.
4. Otherwise the call goes through the scheduler (online) or the batch runner (batch mode), its
   usage is priced, the answer is cached, and usage is added to the run's per-stage totals.

A failure leaves as an :class:`~mmat_core.engine.errors.LLMCallError`; the caller records it on
its sample.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from mmat_core.components import LLMBackend, LLMRequest, LLMResponse
from mmat_core.engine.batch import JOURNAL_FILE, BatchJournal, BatchRunner
from mmat_core.engine.cache import Cache, model_keyed
from mmat_core.construct import construct
from mmat_core.engine.prices import PriceTable
from mmat_core.engine.scheduler import Scheduler
from mmat_core.engine.settings import LLMEngineSettings
from mmat_core.images import ImageStore
from mmat_core.models import ModelCall, Usage

#: Which stage a call's purpose belongs to, for ``usage_by_stage`` in run.json.
STAGE_OF_PURPOSE = {
    "rationale_step": "rationale",
    "final_answer": "rationale",
    "scene_graph": "tools",
    "caption": "tools",
    "reflection_correction": "reflection",
}


def stage_of(purpose: str) -> str:
    """The stage a purpose belongs to: rationale, tools, reflection (critics) or other."""
    if purpose in STAGE_OF_PURPOSE:
        return STAGE_OF_PURPOSE[purpose]
    if purpose.startswith("critic"):
        return "reflection"
    return "other"


def estimate_tokens(request: LLMRequest) -> int:
    """A cheap upper-ish estimate of a call's tokens for the tokens-per-minute bucket: four
    characters a token, about 800 a picture, plus the completion budget."""
    chars = 0
    images = 0
    for message in request.messages:
        if isinstance(message.content, str):
            chars += len(message.content)
        else:
            for part in message.content:
                chars += len(part.text or "")
                images += part.type == "image"
    return chars // 4 + 800 * images + (request.max_tokens or 512)


class EngineClient:
    """Implements :class:`mmat_core.components.LLMClient` over one backend."""

    def __init__(self, backend: LLMBackend, scheduler: Scheduler, images: ImageStore, cache: Cache | None = None,
                 *, prices: PriceTable | None = None, batch: BatchRunner | None = None) -> None:
        self.backend = backend
        #: The backend as cache keys name it (name plus answer-changing options).
        self.key_identity = backend.cache_identity()
        self.scheduler = scheduler
        self.images = images
        self.cache = cache
        self.prices = prices or PriceTable()
        self.batch = batch
        #: HTTP requests behind the calls that were answered (a backend's schema re-asks included).
        self.requests_answered = 0
        #: Of every request sent, those that re-asked after a reply that was not what was asked
        #: for: the backend's schema repairs and the callers' own (``context["repair"] > 0``).
        self.reasks = 0
        self.cached_calls = 0
        self.coalesced_calls = 0
        self.failed_calls = 0
        self.usage = Usage()
        self.usage_by_stage: dict[str, Usage] = {}
        self._in_flight: dict[str, asyncio.Future[LLMResponse]] = {}

    @property
    def calls_made(self) -> int:
        """Every model request sent and paid for: the requests behind answered calls (re-asks
        included) plus every failed attempt the scheduler made (a 5xx, a timeout, a 429)."""
        stats = self.scheduler.stats
        failed_attempts = 0 if self.batch is not None else stats.started - stats.succeeded - stats.in_flight
        return self.requests_answered + failed_attempts

    @property
    def identity(self) -> str:
        """``backend:model`` as written into provenance."""
        return f"{self.backend.name}:{self.backend.model}"

    def _account(self, purpose: str, usage: Usage) -> None:
        self.usage.add(usage)
        stage = stage_of(purpose)
        total = self.usage_by_stage.get(stage)
        if total is None:  # not setdefault: that would build a Usage on every call
            total = self.usage_by_stage[stage] = Usage()
        total.add(usage)

    def _reused(self, request: LLMRequest, key: str, response: LLMResponse) -> tuple[LLMResponse, ModelCall]:
        usage = Usage(cached_calls=1)
        self._account(request.purpose, usage)
        # Every value is already of its field's type (the request and response were validated).
        call = construct(ModelCall, purpose=request.purpose, backend=self.backend.name, model=response.model,
                                         cache_key=key, cached=True, usage=usage)
        return response, call

    async def complete(self, request: LLMRequest) -> tuple[LLMResponse, ModelCall]:
        """Answer ``request`` from the cache, or call the backend through the scheduler."""
        # The key document is encoded once: its text is stored beside the answer too.
        key, document = model_keyed(self.key_identity, self.backend.model, request)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.cached_calls += 1
                return self._reused(request, key, LLMResponse.model_validate(hit))
        shared = self._in_flight.get(key)
        if shared is not None:
            # The same question is being asked right now: wait for that answer, never pay twice.
            response = await asyncio.shield(shared)
            self.coalesced_calls += 1
            return self._reused(request, key, response)
        future: asyncio.Future[LLMResponse] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            response, attempts = await self._call(key, request)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.failed_calls += 1
            future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(response)
        finally:
            self._in_flight.pop(key, None)
        return self._finish(key, document, request, response, attempts)

    async def _call(self, key: str, request: LLMRequest) -> tuple[LLMResponse, int]:
        started = time.monotonic()
        if self.batch is not None:
            response = await self.batch.complete(key, request)
            attempts = 1
        else:
            response, attempts = await self.scheduler.run(
                lambda: self.backend.complete(request, self.images),
                tokens=estimate_tokens(request),
                usage_of=lambda r: r.usage.prompt_tokens + r.usage.completion_tokens,
            )
        response.usage.latency_s = time.monotonic() - started
        return response, attempts

    def _finish(self, key: str, document: str, request: LLMRequest, response: LLMResponse,
                attempts: int) -> tuple[LLMResponse, ModelCall]:
        # A backend that re-asked for its schema reports the requests it sent in usage.calls.
        sent = max(1, response.usage.calls)
        self.requests_answered += sent
        self.reasks += sent if request.context.get("repair") else sent - 1
        # A copy with calls and cost set, built without pydantic's copy and per-field setattr
        # (every value is of its field's type already).
        usage = construct(Usage, **{**response.usage.__dict__, "calls": sent})
        usage.__dict__["cost_usd"] = self.prices.cost(self.backend.name, response.model or self.backend.model, usage,
                                                      offline=self.backend.offline, batch=self.batch is not None)
        self.scheduler.stats.prompt_tokens += usage.prompt_tokens
        self.scheduler.stats.completion_tokens += usage.completion_tokens
        self._account(request.purpose, usage)
        if self.cache is not None:
            self.cache.put(key, response.model_dump(mode="json"), kind="model", document=document,
                           purpose=request.purpose, sample_id=request.sample_id)
        call = construct(ModelCall, purpose=request.purpose, backend=self.backend.name, model=response.model,
                                         cache_key=key, attempts=attempts, usage=usage)
        return response, call

    def report(self) -> dict[str, Any]:
        """The end-of-run summary written to ``engine.json`` and printed by ``mmat build``."""
        data = self.snapshot()
        data["binding_summary"] = self.scheduler.describe_binding()
        if self.prices.unpriced:
            data["price_warning"] = (f"no price for {', '.join(sorted(self.prices.unpriced))}: costs show 0; "
                                     "add them under llm_engine.prices")
        return data

    async def aclose(self) -> None:
        """Stop background work (batch polling); batches still running stay in the journal."""
        if self.batch is not None:
            await self.batch.aclose()

    def snapshot(self) -> dict[str, Any]:
        """What the progress display shows: the scheduler's picture plus tokens, cost and reuse."""
        data = self.scheduler.snapshot()
        data.update(
            backend=self.identity,
            calls_made=self.calls_made,
            reasks=self.reasks,
            cached_calls=self.cached_calls + self.coalesced_calls,
            failed_calls=self.failed_calls,
            prompt_tokens=self.usage.prompt_tokens,
            completion_tokens=self.usage.completion_tokens,
            cost_usd=round(self.usage.cost_usd, 6),
            unpriced=sorted(self.prices.unpriced),
        )
        if self.batch is not None:
            data.update(self.batch.snapshot())
        return data


def build_client(backend: LLMBackend, settings: LLMEngineSettings, images: ImageStore, cache: Cache | None,
                 run_dir: Path) -> EngineClient:
    """The client a run uses: a scheduler with the limits for this backend and model, the price
    table, and in batch mode a batch runner that first resumes batches an earlier run left in
    flight (call inside the running event loop)."""
    scheduler = Scheduler(settings.scheduler_for(backend.name, backend.model), name=f"{backend.name}:{backend.model}")
    batch = None
    if settings.mode == "batch":
        batch = BatchRunner(backend, images, BatchJournal(run_dir / JOURNAL_FILE), max_requests=settings.batch_max_requests,
                            window_s=settings.batch_window_s, poll_s=settings.batch_poll_s, submit_with=scheduler.run)
        batch.resume()
    prices = PriceTable(settings.prices, batch_discount=settings.batch_discount)
    return EngineClient(backend, scheduler, images, cache, prices=prices, batch=batch)
