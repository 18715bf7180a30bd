"""One scheduler for every model call: concurrency, retries with backoff, per-request timeouts.

The scheduler wraps a backend's ``complete`` coroutine. It never loses a call: each attempt ends
in an answer, a retry, or a raised error that the caller records on its sample.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mmat_core.engine.errors import CallTimeout, LLMCallError

T = TypeVar("T")


class SchedulerSettings(BaseModel):
    """Limits of the scheduler for one backend and model."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(64, ge=1, description="calls in flight at once")
    max_attempts: int = Field(6, ge=1, description="attempts per call before it is recorded as failed")
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")


@dataclass
class SchedulerStats:
    """Counters shown in the progress display and run.json."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    in_flight: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Scheduler:
    """Paces calls to one backend."""

    def __init__(self, settings: SchedulerSettings | None = None, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.settings = settings or SchedulerSettings()
        self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        self._sleep = sleep
        self.stats = SchedulerStats()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: Retry-After when given, else
        exponential backoff with full jitter."""
        if retry_after is not None:
            return min(retry_after, self.settings.backoff_max_s)
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * (2**attempt))
        return random.uniform(0, ceiling)

    async def run(self, call: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """Run ``call`` with retries; returns the result and the number of attempts."""
        attempt = 0
        while True:
            attempt += 1
            async with self._semaphore:
                self.stats.started += 1
                self.stats.in_flight += 1
                try:
                    result = await asyncio.wait_for(call(), timeout=self.settings.timeout_s)
                except asyncio.TimeoutError:
                    error: LLMCallError = CallTimeout(f"no answer within {self.settings.timeout_s:.0f}s")
                except LLMCallError as exc:
                    error = exc
                else:
                    self.stats.succeeded += 1
                    return result, attempt
                finally:
                    self.stats.in_flight -= 1
            name = type(error).__name__
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            if not error.retryable or attempt >= self.settings.max_attempts:
                self.stats.failed += 1
                raise error
            self.stats.retries += 1
            await self._sleep(self.backoff(attempt, error.retry_after))
