"""The engine's LLM client: cache first, then the scheduler, then the backend.

Components (the rationale loop, tools such as image_caption, critics) make every model call
through this client, so all calls are paced, cached and recorded the same way.
"""

from __future__ import annotations

import time

from mmat_core.components import LLMBackend, LLMRequest, LLMResponse
from mmat_core.engine.cache import Cache, key_of, model_key_document
from mmat_core.engine.scheduler import Scheduler
from mmat_core.images import ImageStore
from mmat_core.models import ModelCall, Usage


class EngineClient:
    """Implements :class:`mmat_core.components.LLMClient` over one backend."""

    def __init__(self, backend: LLMBackend, scheduler: Scheduler, images: ImageStore, cache: Cache | None = None) -> None:
        self.backend = backend
        self.scheduler = scheduler
        self.images = images
        self.cache = cache
        self.calls_made = 0

    @property
    def identity(self) -> str:
        """``backend:model`` as written into provenance."""
        return f"{self.backend.name}:{self.backend.model}"

    async def complete(self, request: LLMRequest) -> tuple[LLMResponse, ModelCall]:
        """Answer ``request`` from the cache, or call the backend through the scheduler."""
        document = model_key_document(self.backend.name, self.backend.model, request)
        key = key_of(document)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                response = LLMResponse.model_validate(hit)
                call = ModelCall(
                    purpose=request.purpose,
                    backend=self.backend.name,
                    model=response.model,
                    cache_key=key,
                    cached=True,
                    usage=Usage(cached_calls=1),
                )
                return response, call
        started = time.monotonic()
        response, attempts = await self.scheduler.run(lambda: self.backend.complete(request, self.images))
        self.calls_made += 1
        usage = response.usage.model_copy()
        usage.calls = 1
        usage.latency_s = time.monotonic() - started
        if self.cache is not None:
            self.cache.put(
                key,
                response.model_dump(mode="json"),
                kind="model",
                document=document,
                purpose=request.purpose,
                sample_id=request.sample_id,
            )
        call = ModelCall(
            purpose=request.purpose,
            backend=self.backend.name,
            model=response.model,
            cache_key=key,
            attempts=attempts,
            usage=usage,
        )
        return response, call
