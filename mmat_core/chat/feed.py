"""Rows read in the caller's thread and handed to a :class:`~mmat_core.chat.ChatEngine`'s loop.

:meth:`ChatEngine.run` blocks its caller while the engine's own thread answers the rows. A
generator of rows is advanced here, in the caller's thread, not in the engine's: a generator over
a SQLite cursor (or any object tied to the thread that made it) works, and a slow generator
(reading files, decoding pictures) never holds up the loop that is receiving answers. At most
``depth`` rows wait between the two threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future
from typing import Any

#: Seconds between checks, while the caller waits for room, of whether the run has ended.
_POLL_S = 0.1


class RowFeed:
    """``rows`` pulled by :meth:`pump` (in the caller's thread) and read by iterating the feed
    with ``async for`` (in the engine's loop). An error the rows raise is raised there."""

    def __init__(self, rows: Iterable[Any], loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self.rows = rows
        self.total: int | None = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
        self.loop = loop
        self.room = threading.Semaphore(max(1, depth))
        self.stopped = threading.Event()
        self.queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()  # bound to the engine's loop on first use

    def _hand(self, ok: bool, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (ok, item))

    def pump(self, run: Future[Any]) -> None:
        """Read every row into the engine's loop, waiting for room; returns when the rows end or
        when ``run`` is done (it stopped early). A KeyboardInterrupt is the caller's to handle."""
        run.add_done_callback(lambda _: self.stopped.set())
        try:
            for row in self.rows:
                while not self.room.acquire(timeout=_POLL_S):
                    if self.stopped.is_set():
                        return
                if self.stopped.is_set():
                    return
                self._hand(True, row)
        except Exception as exc:  # noqa: BLE001 - the caller's data source broke: the run raises it
            self._hand(False, exc)
            return
        self._hand(False, None)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[Any]:
        while True:
            ok, item = await self.queue.get()
            if ok:
                self.room.release()
                yield item
            elif item is None:
                return
            else:
                raise item
