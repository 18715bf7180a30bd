"""The tool results ``mmat serve`` keeps between requests: a bounded in-memory LRU.

A benchmark asks many questions about one image (MMStar, OCRBench, ...), and every RR or ORR
answer about it runs the same operators on the same bytes. The :class:`~mmat_core.engine.tools.ToolRunner`
already keys each tool result by tool name, tool version, options, image SHA-256, arguments and
the tool's own context (e.g. the question for ``image_caption``); this cache keeps those results
in memory, least recently used out first, so the second question about an image runs no OCR.
Failed tool runs are never stored (the runner stores successes only).

It has the ``get``/``put`` of :class:`mmat_core.engine.cache.Cache`, the run cache of ``mmat
build``, which is SQLite on disk; a server needs no file and forgets on restart.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

#: Entries kept by default (``mmat serve --tool-cache-size``).
DEFAULT_TOOL_CACHE_SIZE = 1024


@dataclass
class _Entry:
    value: Any
    tool: str


class ToolResultCache:
    """A bounded LRU of tool results, with hit and run counts per tool.

    ``max_entries`` of 0 keeps nothing (every question runs its tools).
    """

    def __init__(self, max_entries: int = DEFAULT_TOOL_CACHE_SIZE) -> None:
        self.max_entries = max(0, max_entries)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Tools run in worker threads; their results are stored from the event loop, but a lock
        # keeps the cache safe for any caller.
        self._lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.stored: dict[str, int] = {}
        self.misses = 0
        self.evictions = 0

    def get(self, key: str) -> Any | None:
        """The stored result for ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits[entry.tool] = self.hits.get(entry.tool, 0) + 1
            # A copy, as the on-disk cache gives: the traces of two answers never share a mutable result.
            return copy.deepcopy(entry.value)

    def put(self, key: str, value: Any, *, kind: str = "tool", document: Any = None, purpose: str = "",
            sample_id: str | None = None) -> None:
        """Keep a result (``purpose`` is the tool's name); the least recently used goes past the bound."""
        with self._lock:
            self.stored[purpose] = self.stored.get(purpose, 0) + 1
            if self.max_entries == 0:
                return
            self._entries[key] = _Entry(value, purpose)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        """What ``GET /v1/mmat/stats`` shows: entries, bound, hits, misses, evictions, and per tool
        the runs whose result was stored and the hits."""
        with self._lock:
            tools = sorted(set(self.hits) | set(self.stored))
            return {
                "entries": len(self._entries),
                "max_entries": self.max_entries,
                "hits": sum(self.hits.values()),
                "misses": self.misses,
                "evictions": self.evictions,
                "by_tool": {name: {"runs": self.stored.get(name, 0), "hits": self.hits.get(name, 0)} for name in tools},
            }
