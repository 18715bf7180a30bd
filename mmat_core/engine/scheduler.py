"""One scheduler for every model call to one backend and model.

Each attempt passes, in order: the circuit breaker (is the backend paused?), the requests- and
tokens-per-minute buckets, and the adaptive admission gate (how many calls may be in flight).
Then the call runs under a per-request timeout. A failure is retried with exponential backoff and
full jitter, or after the server's ``Retry-After`` when it gave one, until ``max_attempts``.

The scheduler never loses a call: each ``run`` ends with a result or with a raised
:class:`~mmat_core.engine.errors.LLMCallError` that the caller records on its sample. Any other
exception a backend lets escape is wrapped as a permanent error rather than crashing the run.

It also keeps the books the progress display and ``mmat build`` show: calls in flight, retries,
errors by kind, tokens, and how long calls waited on each limit, which is how it can say what
binds.
"""

from __future__ import annotations

import asyncio
import random
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mmat_core.engine.errors import CallTimeout, LLMCallError, Overloaded, PermanentError, RateLimited
from mmat_core.engine.limits import AdmissionGate, CircuitBreaker, LatencyWatch, RateBucket
from mmat_core.engine.timeouts import with_timeout

T = TypeVar("T")

#: The reasons a call can wait, as shown in "binding" summaries.
WAIT_REASONS = ("concurrency", "rpm", "tpm", "breaker", "backoff")


class _Resumed:
    """The rest of a coroutine whose first step already ran (see :func:`_call_with_timeout`):
    awaiting it goes on exactly as awaiting the coroutine itself would have."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task (a cancellation): pass it on
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def _call_with_timeout(coro: Awaitable[T], seconds: float) -> T:
    """``await coro`` cancelled after ``seconds``. Its first step runs at once: a call that
    finishes without ever waiting (an in-process backend) needs no timer, and setting one up and
    cancelling it was a few percent of such a run. Otherwise the rest runs under the timeout."""
    if type(coro) is not types.CoroutineType:  # another awaitable: as before
        return await with_timeout(coro, seconds)
    try:
        first = coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except BaseException:
        coro.close()
        raise
    return await with_timeout(_Resumed(coro, first), seconds)  # type: ignore[arg-type]


class SchedulerSettings(BaseModel):
    """Limits of the scheduler for one backend and model. Every limit has a default."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(64, ge=1, description="most calls in flight at once")
    rpm: float | None = Field(None, gt=0, description="requests per minute; unset = no limit")
    tpm: float | None = Field(None, gt=0, description="tokens (prompt + completion) per minute; unset = no limit")
    rate_burst_s: float = Field(10.0, gt=0, description="seconds of rpm/tpm quota that may be spent at once")
    max_attempts: int = Field(6, ge=1, description="attempts per call before it is recorded as failed")
    backoff_base_s: float = Field(0.5, ge=0, description="first backoff ceiling; doubles each retry (full jitter)")
    backoff_max_s: float = Field(60.0, ge=0, description="longest wait between attempts, Retry-After included")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    adaptive: bool = Field(True, description="lower admission on 429s and rising latency, recover slowly")
    adaptive_decrease: float = Field(0.75, gt=0, lt=1, description="factor applied to the admission limit on push-back")
    adaptive_recover_after: int = Field(25, ge=1, description="successes in a row before admission grows by one")
    adaptive_floor: float = Field(0.25, ge=0, le=1, description="admission never falls below this fraction of concurrency")
    latency_rise_factor: float = Field(3.0, ge=0, description="latency this many times its baseline counts as push-back; 0 = off")
    breaker_failures: int = Field(20, ge=1, description="failed attempts in a row that open the circuit breaker")
    breaker_cooldown_s: float = Field(30.0, ge=0, description="pause before probing a failing backend (doubles per re-open)")
    breaker_max_trips: int = Field(5, ge=1, description="openings without a success before waiting calls are failed")


@dataclass
class SchedulerStats:
    """Counters shown in the progress display and written to ``engine.json``."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    in_flight: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    waits_s: dict[str, float] = field(default_factory=lambda: {reason: 0.0 for reason in WAIT_REASONS})
    busy_s: float = 0.0


class Scheduler:
    """Paces, retries and accounts every call to one backend and model."""

    def __init__(self, settings: SchedulerSettings | None = None, *, name: str = "llm",
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = s = settings or SchedulerSettings()
        self.name = name
        self._sleep = sleep
        self._clock = clock
        self.gate = AdmissionGate(s.concurrency, adaptive=s.adaptive, decrease=s.adaptive_decrease,
                                  recover_after=s.adaptive_recover_after, floor=s.adaptive_floor, clock=clock)
        self.rpm = RateBucket(s.rpm, burst_s=s.rate_burst_s, clock=clock) if s.rpm else None
        self.tpm = RateBucket(s.tpm, burst_s=s.rate_burst_s, clock=clock) if s.tpm else None
        self.breaker = CircuitBreaker(name, threshold=s.breaker_failures, cooldown_s=s.breaker_cooldown_s,
                                      max_trips=s.breaker_max_trips, clock=clock)
        self.latency = LatencyWatch(s.latency_rise_factor)
        self.stats = SchedulerStats()
        self.started_at = clock()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: the server's Retry-After when given
        (capped at ``backoff_max_s``), else exponential backoff with full jitter."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.settings.backoff_max_s)
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)

    def _wait(self, reason: str, seconds: float) -> None:
        if seconds:
            self.stats.waits_s[reason] = self.stats.waits_s.get(reason, 0.0) + seconds

    async def run(self, call: Callable[[], Awaitable[T]], *, tokens: int = 0,
                  usage_of: Callable[[T], int] | None = None) -> tuple[T, int]:
        """Run ``call`` with the limits and retries; returns the result and the number of attempts.

        ``tokens`` estimates the call's tokens for the tpm bucket; ``usage_of(result)`` gives the
        real count afterwards so the bucket is corrected.
        """
        attempt = 0
        breaker, gate = self.breaker, self.gate
        while True:
            attempt += 1
            # Fast paths first: with the breaker closed and a free slot (the common case) an attempt
            # starts without awaiting a coroutine per check.
            probe = False
            if breaker.state != "closed":
                waited, probe = await breaker.admit()
                self._wait("breaker", waited)
            if self.rpm is not None:
                self._wait("rpm", await self.rpm.acquire(1))
            if self.tpm is not None and tokens:
                self._wait("tpm", await self.tpm.acquire(tokens))
            if not gate.try_acquire():
                self._wait("concurrency", await gate.acquire())
            self.stats.started += 1
            self.stats.in_flight += 1
            started = self._clock()
            try:
                result = await _call_with_timeout(call(), self.settings.timeout_s)
            except asyncio.TimeoutError:
                error: LLMCallError = CallTimeout(f"no answer within {self.settings.timeout_s:g}s "
                                                  "(raise llm_engine.timeout_s if the model is just slow)")
            except LLMCallError as exc:
                error = exc
            except asyncio.CancelledError:
                if probe:
                    self.breaker.release_probe()
                raise
            except Exception as exc:  # a backend bug must end as a recorded failure, not a crashed run
                error = PermanentError(f"{type(exc).__name__}: {exc}")
            else:
                elapsed = self._clock() - started
                self.stats.busy_s += elapsed
                self.stats.succeeded += 1
                self.breaker.record(True, probe=probe)
                if self.latency.observe(elapsed):
                    self.gate.on_pushback()
                else:
                    self.gate.on_success()
                if usage_of is not None and self.tpm is not None:
                    self.tpm.adjust(usage_of(result) - tokens)
                return result, attempt
            finally:
                self.stats.in_flight -= 1
                gate.release()
            self.stats.busy_s += self._clock() - started
            name = type(error).__name__
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
            self.breaker.record(False, probe=probe)
            if isinstance(error, (RateLimited, Overloaded, CallTimeout)):
                if isinstance(error, RateLimited):
                    self.stats.rate_limited += 1
                self.gate.on_pushback()
            if not error.retryable or attempt >= self.settings.max_attempts:
                self.stats.failed += 1
                if error.retryable:
                    error.args = (f"{error} (gave up after {attempt} attempts)",)
                raise error
            self.stats.retries += 1
            delay = self.backoff(attempt, error.retry_after)
            self._wait("backoff", delay)
            await self._sleep(delay)

    # -- reporting --------------------------------------------------------------------------

    def binding(self) -> tuple[str, float]:
        """The limit calls waited on most and the share of call time spent waiting on it.

        Returns ``("server", 0.0)`` when no limit made calls wait noticeably: then the server's
        own latency is what bounds throughput.
        """
        waits = self.stats.waits_s
        reason = max(waits, key=lambda k: waits[k]) if waits else "server"
        total = waits.get(reason, 0.0) + self.stats.busy_s
        share = waits.get(reason, 0.0) / total if total > 0 else 0.0
        if share < 0.05:
            return "server", share
        return reason, share

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready picture of the scheduler now."""
        s = self.stats
        reason, share = self.binding()
        elapsed = max(1e-9, self._clock() - self.started_at)
        return {
            "name": self.name,
            "in_flight": s.in_flight,
            "started": s.started,
            "succeeded": s.succeeded,
            "failed": s.failed,
            "retries": s.retries,
            "rate_limited": s.rate_limited,
            "errors": dict(s.errors),
            "admission_limit": self.gate.current,
            "concurrency": self.settings.concurrency,
            "rpm": self.settings.rpm,
            "tpm": self.settings.tpm,
            "calls_per_s": s.succeeded / elapsed,
            "waits_s": {k: round(v, 3) for k, v in s.waits_s.items()},
            "binding": reason,
            "binding_share": round(share, 3),
            "breaker": self.breaker.state,
            "breaker_events": [e.message for e in self.breaker.events[-5:]],
        }

    def describe_binding(self) -> str:
        """One sentence on what bounds throughput, with the setting to change."""
        reason, share = self.binding()
        s = self.settings
        if reason == "server":
            return (f"{self.name}: no limit binds; calls spent {share:.0%} of their time waiting, so the server's "
                    "latency bounds throughput (raise llm_engine.concurrency for more)")
        setting = {
            "concurrency": f"llm_engine.concurrency={s.concurrency} (admission now {self.gate.current})",
            "rpm": f"llm_engine.rpm={s.rpm:g}" if s.rpm else "llm_engine.rpm",
            "tpm": f"llm_engine.tpm={s.tpm:g}" if s.tpm else "llm_engine.tpm",
            "breaker": "the circuit breaker (the backend kept failing)",
            "backoff": f"retry backoff after {self.stats.rate_limited} rate limits and "
                       f"{sum(self.stats.errors.values()) - self.stats.rate_limited} other errors",
        }[reason]
        return f"{self.name}: binding limit is {setting}; calls spent {share:.0%} of their time waiting on it"
