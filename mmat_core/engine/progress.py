"""The live progress display of ``mmat build``: samples done, calls in flight, rate, tokens,
cost, errors and the limit that binds.

It is a pipeline progress callback. The run announces itself with ``{"event": "started",
"snapshot": callable}``; the display then refreshes from that callable a few times a second
(rich, on a terminal) or prints a plain line every ``plain_every_s`` seconds (logs, CI).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from mmat_core.models import KEPT_STATUSES


def status_line(done: int, snap: dict[str, Any], elapsed_s: float, statuses: dict[str, int] | None = None,
                rejected: int = 0) -> str:
    """One line summing up a run in progress: ``statuses`` counts this run's finished samples by
    status (kept and dropped are shown from it), ``rejected`` the rows quarantined so far."""
    errors = sum(snap.get("errors", {}).values())
    binding = snap.get("binding", "server")
    limit = "none (server latency)" if binding == "server" else f"{binding} ({snap.get('binding_share', 0):.0%} of call time)"
    counted = statuses or {}
    kept = sum(n for status, n in counted.items() if status in KEPT_STATUSES)
    # A run that keeps nothing must say so while it runs, not only at the end.
    samples = f"samples {done}: kept {kept}, dropped {sum(counted.values()) - kept}"
    if rejected:
        samples += f", quarantined {rejected}"
    reasks = snap.get("reasks", 0)
    parts = [
        samples,
        f"in flight {snap.get('in_flight', 0)}/{snap.get('admission_limit', '?')}",
        f"{snap.get('calls_per_s', 0.0):.1f} calls/s",
        f"calls {snap.get('calls_made', 0)}" + (f" ({reasks} re-asks)" if reasks else "")
        + f" (+{snap.get('cached_calls', 0)} cached)",
        f"tokens {snap.get('prompt_tokens', 0) + snap.get('completion_tokens', 0):,}",
        f"${snap.get('cost_usd', 0.0):.4f}",
        f"errors {errors} (retries {snap.get('retries', 0)})",
        f"binding {limit}",
    ]
    if snap.get("breaker", "closed") != "closed":
        parts.append(f"BREAKER {snap['breaker'].upper()}")
    if "batches_in_flight" in snap:
        parts.append(f"batches {snap['batches_in_flight']} in flight, {snap['batches_collected']} collected")
    return f"[{elapsed_s:6.0f}s] " + " | ".join(parts)


class LiveProgress:
    """A progress callback that shows the engine's state while a run goes on."""

    def __init__(self, *, stream: TextIO | None = None, plain_every_s: float = 10.0, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.plain_every_s = plain_every_s
        self.live = self.stream.isatty() if live is None else live
        self.done = 0
        self.statuses: dict[str, int] = {}
        #: Rows quarantined so far (before generation: duplicates, bad images, ...).
        self.rejected = 0
        self.snapshot: Callable[[], dict[str, Any]] = dict
        self.started = time.monotonic()
        self._last_plain = 0.0
        self._live: Any = None
        self._breaker_seen = 0

    def __call__(self, event: dict[str, Any]) -> None:
        """Receive a pipeline progress event."""
        if event.get("event") == "started":
            self.snapshot = event["snapshot"]
            self.started = time.monotonic()
            if self.live:
                from rich.console import Console
                from rich.live import Live

                self._live = Live(get_renderable=self._render, console=Console(file=self.stream),
                                  refresh_per_second=4, transient=False)
                self._live.start()
            return
        if "done" in event:
            self.done = event["done"]
            status = event.get("status")
            if status:
                self.statuses[status] = self.statuses.get(status, 0) + 1
        if "rejected" in event:
            self.rejected = event["rejected"]
        if not self.live and time.monotonic() - self._last_plain >= self.plain_every_s:
            self._last_plain = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        """The current status line."""
        return status_line(self.done, self.snapshot(), time.monotonic() - self.started, self.statuses, self.rejected)

    def _render(self) -> Any:
        from rich.text import Text

        snap = self.snapshot()
        text = Text(status_line(self.done, snap, time.monotonic() - self.started, self.statuses, self.rejected))
        for message in snap.get("breaker_events", [])[-2:]:
            text.append(f"\n  circuit breaker: {message}", style="bold red")
        return text

    def close(self) -> None:
        """Stop the live display (prints its last state)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self.done:
            print(self.line(), file=self.stream, flush=True)
