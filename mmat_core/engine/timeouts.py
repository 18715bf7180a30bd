"""One way to put a time limit on an awaitable, shared by the scheduler (model calls) and the
tool runner (operators and RAG)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

if sys.version_info >= (3, 11):
    async def with_timeout(awaitable: Awaitable[T], seconds: float) -> T:
        """``await awaitable`` cancelled after ``seconds`` (asyncio.TimeoutError). Unlike
        ``asyncio.wait_for`` before 3.12 it runs the call in the caller's task instead of a new one."""
        async with asyncio.timeout(seconds):
            return await awaitable
else:  # pragma: no cover - Python 3.10
    async def with_timeout(awaitable: Awaitable[T], seconds: float) -> T:
        """``await awaitable`` cancelled after ``seconds`` (asyncio.TimeoutError)."""
        return await asyncio.wait_for(awaitable, timeout=seconds)
