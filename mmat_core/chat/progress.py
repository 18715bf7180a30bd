"""The progress display of a :class:`~mmat_core.chat.ChatEngine` run: rows done out of all, and
the engine's state as ``mmat build`` shows it (calls in flight, requests, cache hits, tokens,
cost, retries and the limit that binds).

On a terminal it is a rich progress bar; elsewhere (logs, CI, a notebook's captured stderr) a
plain line every ``plain_every_s`` seconds and one at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def chat_status(snap: dict[str, Any]) -> str:
    """The engine's part of the status line, from a :meth:`ChatEngine` snapshot."""
    binding = snap.get("binding", "server")
    limit = "none (server latency)" if binding == "server" else f"{binding} ({snap.get('binding_share', 0):.0%} of call time)"
    parts = [
        f"in flight {snap.get('in_flight', 0)}/{snap.get('admission_limit', '?')}",
        f"requests {snap.get('requests', 0)} (+{snap.get('cached', 0)} cached)",
        f"tokens {snap.get('tokens', 0):,}",
        f"${snap.get('cost_usd', 0.0):.4f}",
        f"retries {snap.get('retries', 0)}",
        f"binding {limit}",
    ]
    if snap.get("breaker", "closed") != "closed":
        parts.append(f"BREAKER {snap['breaker'].upper()}")
    return " | ".join(parts)


class ChatProgress:
    """Shows a run's progress; ``update`` after each row, ``close`` at the end."""

    def __init__(self, total: int | None, snapshot: Callable[[], dict[str, Any]], *, stream: TextIO | None = None,
                 live: bool | None = None, plain_every_s: float = 10.0) -> None:
        self.total = total
        self.snapshot = snapshot
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.plain_every_s = plain_every_s
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_plain = self.started
        self._progress: Any = None
        self._task: Any = None
        self._live: Any = None
        if self.live:
            from rich.console import Console
            from rich.live import Live
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            # The bar on one line, the engine's state below it (too long to share the bar's line).
            self._progress = Progress(TextColumn("rows"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self._task = self._progress.add_task("rows", total=total)
            self._live = Live(get_renderable=self._render, console=Console(file=self.stream), refresh_per_second=4)
            self._live.start()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        failed = f"{self.failed} failed | " if self.failed else ""
        return Group(self._progress, Text(failed + chat_status(self.snapshot())))

    def rows(self) -> str:
        """``rows 12/40 (1 failed)``."""
        total = "?" if self.total is None else str(self.total)
        return f"rows {self.done}/{total}" + (f" ({self.failed} failed)" if self.failed else "")

    def line(self) -> str:
        """The current status line."""
        return f"[{time.monotonic() - self.started:6.0f}s] {self.rows()} | {chat_status(self.snapshot())}"

    def update(self, *, failed: bool) -> None:
        """One more row is done."""
        self.done += 1
        self.failed += failed
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)
        elif time.monotonic() - self._last_plain >= self.plain_every_s:
            self._last_plain = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the display, leaving its last state on screen."""
        if self._live is not None:
            self._progress.update(self._task, completed=self.done)
            self._live.stop()
            self._live = self._progress = None
        else:
            print(self.line(), file=self.stream, flush=True)
