"""The scheduler's building blocks: per-minute rate buckets, adaptive admission, circuit breaker.

Each is small, asyncio-only and driven by an injectable clock, so the scheduler composes them
and tests can reason about them without real waiting where that matters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("mmat.engine")


class RateBucket:
    """A token bucket for a per-minute limit (requests or tokens per minute).

    It refills continuously at ``per_minute / 60`` a second and holds at most ``burst_s``
    seconds' worth, so a fresh run does not fire a whole minute's quota in its first instant
    (providers meter over sub-minute windows and answer such bursts with 429).
    """

    def __init__(self, per_minute: float, *, burst_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` (more than the capacity is allowed: it waits for a full bucket and goes
        into debt). Returns the seconds waited."""
        waited = 0.0
        # One waiter at a time keeps the order fair and the arithmetic simple.
        async with self._lock:
            self._refill()
            need = min(amount, self.capacity)
            while self.level < need:
                delay = (need - self.level) / self.rate
                await asyncio.sleep(delay)
                waited += delay
                # Not capped here: a sleep that overran is quota earned, not lost (capped, a
                # backlogged bucket of small capacity ran a few percent below its rate).
                now = self._clock()
                self.level += (now - self._stamp) * self.rate
                self._stamp = now
            self.level -= amount
        return waited

    def adjust(self, delta: float) -> None:
        """Correct an earlier estimate: positive ``delta`` takes more, negative gives back."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


class AdmissionGate:
    """How many calls may be in flight: an adaptive limit between 1 and the configured maximum.

    The limit falls to ``decrease`` times itself when the server pushes back (a 429, or latency
    well above its running baseline) and climbs back by one after ``recover_after`` successes in
    a row: fast down, slow up. At most one decrease per ``cooldown_s``, so a burst of 429s from
    calls already in flight counts as one signal.
    """

    def __init__(self, maximum: int, *, adaptive: bool = True, decrease: float = 0.75, recover_after: int = 25,
                 cooldown_s: float = 1.0, floor: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = maximum
        #: The limit never falls below this many: scattered 429s (a provider shedding a few calls
        #: at random) would otherwise ratchet admission down to one call at a time.
        self.minimum = max(1.0, floor * maximum)
        self.limit = float(maximum)
        self.adaptive = adaptive
        self.decrease = decrease
        self.recover_after = recover_after
        self.cooldown_s = cooldown_s
        self.in_flight = 0
        self.decreases = 0
        self._streak = 0
        self._last_decrease = -1e18
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        """The whole number of calls admitted now."""
        return max(1, int(self.limit))

    def try_acquire(self) -> bool:
        """Take a slot if one is free now and nobody is queued before us; never waits."""
        if self.in_flight < self.current and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        if self.try_acquire():
            return 0.0
        started = self._clock()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.release()
            raise
        return self._clock() - started

    def release(self) -> None:
        """Free a slot and admit waiters while the limit allows."""
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.current:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)

    def on_pushback(self) -> bool:
        """The server signalled overload; returns True when the limit was lowered."""
        self._streak = 0
        if not self.adaptive:
            return False
        now = self._clock()
        if now - self._last_decrease < self.cooldown_s:
            return False
        self._last_decrease = now
        self.limit = max(self.minimum, self.limit * self.decrease)
        self.decreases += 1
        return True

    def on_success(self) -> None:
        """A call succeeded: count towards the slow recovery."""
        self._streak += 1
        if self._streak >= self.recover_after and self.limit < self.maximum:
            self._streak = 0
            self.limit = min(float(self.maximum), self.limit + 1)
            self._wake()


class LatencyWatch:
    """Notices a server that queues instead of refusing: latency far above its own baseline.

    The baseline is the lowest smoothed latency seen, allowed to drift up slowly so that a model
    that is simply slower on long prompts does not count as congestion for ever.
    """

    def __init__(self, rise_factor: float = 3.0, *, alpha: float = 0.1, warmup: int = 20) -> None:
        self.rise_factor = rise_factor
        self.alpha = alpha
        self.warmup = warmup
        self.smoothed: float | None = None
        self.baseline: float | None = None
        self.samples = 0

    def observe(self, latency_s: float) -> bool:
        """Record one latency; True when it says the server is congested."""
        self.samples += 1
        self.smoothed = latency_s if self.smoothed is None else (1 - self.alpha) * self.smoothed + self.alpha * latency_s
        if self.baseline is None or self.smoothed < self.baseline:
            self.baseline = self.smoothed
        else:
            self.baseline *= 1.001
        if self.samples < self.warmup or self.rise_factor <= 0:
            return False
        return self.smoothed > self.rise_factor * self.baseline


@dataclass
class BreakerEvent:
    """One change of the breaker's state, for the progress display and run summary."""

    at: float
    state: str
    message: str


class CircuitBreaker:
    """Pauses a backend that fails persistently, then probes it with a single call.

    Closed: calls flow. After ``threshold`` failed attempts in a row it opens: new attempts wait
    ``cooldown_s`` (doubling on each re-open, capped at ``max_cooldown_s``), then one probe goes
    through (half-open). A success closes it; after ``max_trips`` openings without a success in
    between, waiting calls are failed so the run can finish and record them.
    """

    def __init__(self, name: str, *, threshold: int = 20, cooldown_s: float = 30.0, max_cooldown_s: float = 600.0,
                 max_trips: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.max_trips = max_trips
        self.state = "closed"
        self.failures = 0
        self.trips = 0
        self.opened_at = 0.0
        self.events: list[BreakerEvent] = []
        self._clock = clock
        self._probe_busy = False
        self._changed = asyncio.Event()

    @property
    def gave_up(self) -> bool:
        """True once the breaker has opened ``max_trips`` times without a success."""
        return self.trips >= self.max_trips and self.state == "open"

    def _cooldown(self) -> float:
        return min(self.max_cooldown_s, self.cooldown_s * (2 ** max(0, self.trips - 1)))

    def reopens_in(self) -> float:
        """Seconds until the next probe may go (0 when closed)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.opened_at + self._cooldown() - self._clock())

    async def admit(self) -> tuple[float, bool]:
        """Wait until an attempt may go. Returns (seconds waited, whether this attempt is the probe).

        Raises :class:`~mmat_core.engine.errors.CircuitOpen` once the breaker gave up.
        """
        from mmat_core.engine.errors import CircuitOpen

        started = self._clock()
        while True:
            if self.gave_up:
                raise CircuitOpen(f"{self.name} failed persistently: the circuit breaker opened {self.trips} times; "
                                  "check the backend (base_url, model name, service status) and rerun to resume")
            if self.state == "closed":
                return self._clock() - started, False
            if self.state == "open" and self.reopens_in() <= 0:
                self._set("half_open", f"{self.name}: probing with one call")
            if self.state == "half_open" and not self._probe_busy:
                self._probe_busy = True
                return self._clock() - started, True
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.01, self.reopens_in() or 0.5))
            except asyncio.TimeoutError:
                pass

    def release_probe(self) -> None:
        """The probe was cancelled before it had an outcome: let another call probe."""
        self._probe_busy = False
        self._changed.set()

    def record(self, ok: bool, *, probe: bool = False) -> None:
        """Record the outcome of an attempt admitted by :meth:`admit`."""
        if probe:
            self._probe_busy = False
        if ok:
            self.failures = 0
            if self.state != "closed":
                self.trips = 0
                self._set("closed", f"{self.name}: recovered, calls resume")
            return
        self.failures += 1
        if self.state == "half_open" and probe:
            self._open()
        elif self.state == "closed" and self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.trips += 1
        self.opened_at = self._clock()
        self._set("open", f"{self.name}: {self.failures} failed attempts in a row; pausing calls for "
                          f"{self._cooldown():.0f}s (opening {self.trips} of at most {self.max_trips})")

    def _set(self, state: str, message: str) -> None:
        self.state = state
        self.events.append(BreakerEvent(self._clock(), state, message))
        (log.warning if state == "open" else log.info)("circuit breaker: %s", message)
        self._changed.set()
