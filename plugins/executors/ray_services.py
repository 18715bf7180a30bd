"""The services a Ray run shares between its workers: one limit authority and one cache.

- :class:`LimitAuthority` holds, for each backend and model, the run's one admission gate
  (calls in flight), its requests- and tokens-per-minute buckets and its adaptive state: every
  worker's scheduler asks it before each call (:func:`share_limits` swaps the scheduler's local
  gate and buckets for :class:`RemoteGate` and :class:`RemoteBucket`), so the cluster as a whole
  keeps to the configured ``concurrency``, ``rpm`` and ``tpm``, and a 429 seen by one worker
  lowers admission for all. Slots held by a worker that died are given back by the driver
  (:meth:`LimitAuthority.forget_worker`).
- :class:`CacheService` owns the run's cache file (``RUN_DIR/cache.sqlite``, the same file the
  local executor uses): entries are addressed by key only, so a resume with any number of
  workers, or with the local executor, reuses every paid call. Workers reach it through
  :class:`RemoteCache`, which has the :class:`~mmat_core.engine.cache.Cache` methods the engine
  calls. Each put is sent at once (a worker killed a moment later has lost no paid call);
  :meth:`RemoteCache.commit` returns once the service has committed every put sent before it.

Both are asyncio Ray actors that reserve no CPU. This module imports Ray only inside functions.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from mmat_core.engine.cache import Cache
from mmat_core.engine.limits import AdmissionGate, RateBucket

#: Recent entries a worker's cache proxy answers itself (its own puts, its last hits).
RECENT_ENTRIES = 4096


class SharedLimits:
    """The limits of one backend and model for the whole cluster (inside the authority)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.gate = AdmissionGate(int(settings["concurrency"]), adaptive=bool(settings.get("adaptive", True)),
                                  decrease=float(settings.get("adaptive_decrease", 0.75)),
                                  recover_after=int(settings.get("adaptive_recover_after", 25)),
                                  floor=float(settings.get("adaptive_floor", 0.25)))
        burst = float(settings.get("rate_burst_s", 10.0))
        self.buckets = {kind: RateBucket(float(settings[kind]), burst_s=burst)
                        for kind in ("rpm", "tpm") if settings.get(kind)}
        #: worker id -> slots it holds now.
        self.held: dict[str, int] = {}
        self.admitted = 0
        self.pushbacks = 0
        #: The most calls in flight at once, cluster-wide.
        self.peak = 0


class LimitAuthority:
    """One admission gate and rate buckets per backend and model, for every worker of a run."""

    def __init__(self) -> None:
        self.limits: dict[str, SharedLimits] = {}

    async def reset(self) -> None:
        """Forget every limit: the actor serves another run (the executor's ``reuse_workers``)."""
        self.limits = {}

    async def configure(self, name: str, settings: dict[str, Any]) -> None:
        """Create the limits of ``name`` from a scheduler's settings (the first worker's wins)."""
        if name not in self.limits:
            self.limits[name] = SharedLimits(settings)

    async def admit(self, name: str, worker: str) -> tuple[float, int]:
        """Wait for a slot of ``name``'s gate; returns the seconds waited and the admission limit."""
        limits = self.limits[name]
        waited = await limits.gate.acquire()
        limits.held[worker] = limits.held.get(worker, 0) + 1
        limits.admitted += 1
        limits.peak = max(limits.peak, limits.gate.in_flight)
        return waited, limits.gate.current

    async def release(self, name: str, worker: str) -> None:
        """Give back a slot taken by :meth:`admit`."""
        limits = self.limits[name]
        if limits.held.get(worker, 0) > 0:
            limits.held[worker] -= 1
            limits.gate.release()

    async def take(self, name: str, kind: str, amount: float) -> float:
        """Take ``amount`` from the ``rpm`` or ``tpm`` bucket of ``name``; returns seconds waited."""
        return await self.limits[name].buckets[kind].acquire(amount)

    async def adjust(self, name: str, kind: str, delta: float) -> None:
        """Correct an estimate taken from a bucket (the real token count came back)."""
        self.limits[name].buckets[kind].adjust(delta)

    async def pushback(self, name: str) -> None:
        """A worker saw a 429 (or congestion): admission falls for the whole cluster."""
        limits = self.limits[name]
        limits.pushbacks += 1
        limits.gate.on_pushback()

    async def success(self, name: str) -> None:
        """A call succeeded somewhere: counts towards the slow recovery of admission."""
        self.limits[name].gate.on_success()

    async def forget_worker(self, worker: str) -> int:
        """Give back every slot a lost worker held; returns how many."""
        freed = 0
        for limits in self.limits.values():
            for _ in range(limits.held.pop(worker, 0)):
                limits.gate.release()
                freed += 1
        return freed

    async def snapshot(self) -> dict[str, Any]:
        """Each backend's shared limits now: admission limit, calls in flight, decreases."""
        return {name: {"concurrency": limits.gate.maximum, "admission_limit": limits.gate.current,
                       "in_flight": limits.gate.in_flight, "peak_in_flight": limits.peak, "admitted": limits.admitted,
                       "pushbacks": limits.pushbacks, "decreases": limits.gate.decreases,
                       "rpm": limits.settings.get("rpm"), "tpm": limits.settings.get("tpm"),
                       "held_by_worker": {w: n for w, n in sorted(limits.held.items()) if n}}
                for name, limits in sorted(self.limits.items())}


class RemoteGate:
    """Stands in for a scheduler's :class:`AdmissionGate`: every slot comes from the authority."""

    def __init__(self, authority: Any, name: str, worker: str, maximum: int) -> None:
        self.authority = authority
        self.name = name
        self.worker = worker
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0

    @property
    def current(self) -> int:
        """The cluster's admission limit as last reported."""
        return max(1, int(self.limit))

    def try_acquire(self) -> bool:
        """Never without asking the authority: always False."""
        return False

    async def acquire(self) -> float:
        """Wait for a cluster-wide slot; returns the seconds waited."""
        waited, current = await self.authority.admit.remote(self.name, self.worker)
        self.limit = float(current)
        self.in_flight += 1
        return float(waited)

    def release(self) -> None:
        """Give the slot back (not awaited: the call's result need not wait for it)."""
        self.in_flight -= 1
        self.authority.release.remote(self.name, self.worker)

    def on_pushback(self) -> bool:
        """Tell the authority; the cluster's limit falls there."""
        self.authority.pushback.remote(self.name)
        return False

    def on_success(self) -> None:
        """Tell the authority (its recovery counts successes cluster-wide)."""
        self.authority.success.remote(self.name)


class RemoteBucket:
    """Stands in for a scheduler's :class:`RateBucket`: the quota is the cluster's."""

    def __init__(self, authority: Any, name: str, kind: str) -> None:
        self.authority = authority
        self.name = name
        self.kind = kind

    async def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` from the cluster's bucket; returns the seconds waited."""
        return float(await self.authority.take.remote(self.name, self.kind, amount))

    def adjust(self, delta: float) -> None:
        """Correct an estimate (not awaited)."""
        self.authority.adjust.remote(self.name, self.kind, delta)


def share_limits(client: Any, authority: Any, worker: str) -> None:
    """Make ``client``'s scheduler (an :class:`~mmat_core.engine.client.EngineClient`'s) take its
    slots and rate quota from ``authority``, configured (once per cluster) from its own settings."""
    import ray

    scheduler = client.scheduler
    settings = scheduler.settings.model_dump(mode="json")
    ray.get(authority.configure.remote(scheduler.name, settings))
    scheduler.gate = RemoteGate(authority, scheduler.name, worker, scheduler.settings.concurrency)
    scheduler.rpm = RemoteBucket(authority, scheduler.name, "rpm") if settings.get("rpm") else None
    scheduler.tpm = RemoteBucket(authority, scheduler.name, "tpm") if settings.get("tpm") else None


class CacheService:
    """The run's one cache (a :class:`Cache` over one SQLite file), for every worker."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.cache: Cache | None = None
        self.gets = 0
        self.puts = 0

    def _open(self) -> Cache:
        # Opened inside the actor's event loop: the cache then gathers writes into batches.
        if self.cache is None:
            self.cache = Cache(self.path, commit_after_s=0.25)
        return self.cache

    async def get(self, key: str) -> Any | None:
        """The stored value for ``key``, or None."""
        self.gets += 1
        return self._open().get(key)

    async def put(self, key: str, value: Any, kind: str, document: Any, purpose: str, sample_id: str | None) -> None:
        """Store a result (committed with the next batch)."""
        self.puts += 1
        self._open().put(key, value, kind=kind, document=document, purpose=purpose, sample_id=sample_id)

    async def commit(self) -> None:
        """Commit every entry put so far (each caller's earlier puts ran before this)."""
        await self._open().commit()

    async def counts(self) -> dict[str, int]:
        """Lookups and puts served."""
        return {"gets": self.gets, "puts": self.puts}

    async def close(self) -> None:
        """Commit and close the file."""
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    async def reopen(self, path: str) -> None:
        """Serve another run's cache file (the executor's ``reuse_workers``)."""
        await self.close()
        self.path, self.gets, self.puts = Path(path), 0, 0


class RemoteCache:
    """A worker's view of the :class:`CacheService`, with the :class:`Cache` methods the engine
    calls (``get``, ``put``, ``commit``, ``flush``, ``close``). It answers its own recent puts
    and hits itself (a re-ask of one sample repeats its earlier calls)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.hits = 0
        self.misses = 0
        self.pending = 0
        self._recent: OrderedDict[str, Any] = OrderedDict()

    def _remember(self, key: str, value: Any) -> None:
        self._recent[key] = value
        self._recent.move_to_end(key)
        if len(self._recent) > RECENT_ENTRIES:
            self._recent.popitem(last=False)

    def get(self, key: str) -> Any | None:
        """The stored value for ``key`` (from this worker's recent entries or the service), or None."""
        import ray

        value = self._recent.get(key)
        if value is None:
            value = ray.get(self.service.get.remote(key))
            if value is None:
                self.misses += 1
                return None
            self._remember(key, value)
        self.hits += 1
        return value

    def put(self, key: str, value: Any, *, kind: str, document: dict[str, Any] | str, purpose: str = "",
            sample_id: str | None = None) -> None:
        """Send a result to the service at once (not awaited) and remember it here."""
        self.service.put.remote(key, value, kind, document, purpose, sample_id)
        self._remember(key, value)

    async def commit(self) -> None:
        """Return once the service has committed every put this worker sent."""
        await self.service.commit.remote()

    def flush(self) -> None:
        """:meth:`commit`, blocking."""
        import ray

        ray.get(self.service.commit.remote())

    def close(self) -> None:
        """Commit what this worker sent (the service stays open for the others)."""
        self.flush()
