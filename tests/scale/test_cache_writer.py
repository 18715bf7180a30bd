"""The batching cache's writer thread: batches committed in order off the event loop, exactly
the rows the plain path writes, errors raised to the run, a WAL that stays bounded, and
cancelled waiters that cannot stop the writer."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from mmat_core.engine import cache as cache_module
from mmat_core.engine.cache import Cache

VALUES: list[Any] = [
    {"text": "plain"},
    {"text": "é ü 中文 \U0001f600 \u2028", "n": 1.5e-7, "big": 2**62, "neg": -0.0},
    {"text": "a NUL \x00 inside"},  # cannot travel through SQLite's JSON functions: executemany
    {"list": [1, 2.5, None, True], "nested": {"k": "v"}},
]


def rows_of(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT key, kind, purpose, sample_id, key_doc, value, hits FROM entries ORDER BY key").fetchall()


def fill(cache: Cache) -> None:
    for i, value in enumerate(VALUES):
        cache.put(f"k{i}", value, kind="model", document={"kind": "model", "i": i, "text": "é\x00" if i == 2 else "x"},
                  purpose="rationale_step", sample_id=None if i == 1 else f"s/{i}")


def test_the_writer_thread_stores_exactly_what_the_plain_path_stores(tmp_path: Path) -> None:
    plain = Cache(tmp_path / "plain.sqlite")  # commits each put at once on its own connection
    fill(plain)
    plain.close()

    async def batched() -> None:
        cache = Cache(tmp_path / "batched.sqlite", commit_after_s=60.0)
        fill(cache)
        assert cache.get("k1") == VALUES[1]  # read back from memory before it is on disk
        await cache.commit()
        assert rows_of(tmp_path / "batched.sqlite")[0][0] == "k0"
        for i, value in enumerate(VALUES):
            assert cache.get(f"k{i}") == value
        cache.close()

    asyncio.run(batched())
    batched_rows = rows_of(tmp_path / "batched.sqlite")
    assert [row[:6] for row in batched_rows] == [row[:6] for row in rows_of(tmp_path / "plain.sqlite")]
    assert [row[6] for row in batched_rows] == [1, 2, 1, 1]  # each get counted (k1 was read twice)


def test_hit_counts_reach_the_file_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    first = Cache(path)
    first.put("k", {"v": 1}, kind="model", document={})
    first.close()

    async def reuse() -> None:
        cache = Cache(path, commit_after_s=60.0)
        for _ in range(3):
            assert cache.get("k") == {"v": 1}
        await cache.commit()
        cache.close()

    asyncio.run(reuse())
    with sqlite3.connect(str(path)) as db:
        assert db.execute("SELECT hits FROM entries WHERE key='k'").fetchone() == (3,)


def test_a_failed_write_is_raised_to_the_run(tmp_path: Path) -> None:
    async def run() -> None:
        cache = Cache(tmp_path / "cache.sqlite", commit_after_s=60.0)

        def full_disk(rows: Any, hits: Any, db: Any = None) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        cache._commit = full_disk  # type: ignore[method-assign]
        cache.put("k", {"v": 1}, kind="model", document={})
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await cache.commit()
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            cache.put("k2", {"v": 2}, kind="model", document={})
        assert cache.get("k") == {"v": 1}  # still answered in this process
        cache.close()  # does not try again, does not hang

    asyncio.run(run())


def test_a_cancelled_waiter_neither_cancels_the_batch_nor_stops_the_writer(tmp_path: Path) -> None:
    async def run() -> None:
        cache = Cache(tmp_path / "cache.sqlite", commit_after_s=60.0)
        cache.put("k1", {"v": 1}, kind="model", document={})
        waiter = asyncio.create_task(cache.commit())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        cache.put("k2", {"v": 2}, kind="model", document={})
        await asyncio.wait_for(cache.commit(), timeout=10)
        cache.close()

    asyncio.run(run())
    assert [row[0] for row in rows_of(tmp_path / "cache.sqlite")] == ["k1", "k2"]


def test_the_wal_is_restarted_once_large_and_the_bloom_filter_survives(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "WAL_RESET_BYTES", 256 * 1024)
    monkeypatch.setattr(cache_module, "CHECKPOINT_EVERY_S", 0.05)
    path = tmp_path / "cache.sqlite"
    wal = path.with_name("cache.sqlite-wal")
    sizes: list[int] = []

    async def run() -> Cache:
        cache = Cache(path, commit_after_s=60.0)
        assert cache._known is not None
        for batch in range(40):
            for i in range(50):
                cache.put(f"{batch:04d}-{i:04d}", {"text": "x" * 2000}, kind="model", document={"pad": "y" * 2000})
            await cache.commit()
            await asyncio.sleep(0.06)  # give the writer room to checkpoint
            sizes.append(wal.stat().st_size)
        return cache

    cache = asyncio.run(run())
    # About 8 MB went through the log; it was started again instead of growing to hold it all.
    assert max(sizes) < 4 * 1024 * 1024, sizes
    assert cache._known is not None  # a restart is not another connection's change
    assert cache.get("0000-0000") == {"text": "x" * 2000}
    cache.close()


def test_commits_run_beside_the_event_loop(tmp_path: Path) -> None:
    """While a large batch is committed the loop keeps running other work."""

    async def run() -> tuple[int, float]:
        cache = Cache(tmp_path / "cache.sqlite", commit_after_s=60.0)
        for i in range(20_000):
            cache.put(f"key-{i:08d}-{'z' * 40}", {"text": "x" * 500}, kind="model", document={"pad": "y" * 1500})
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        await cache.commit()
        elapsed = time.monotonic() - started
        task.cancel()
        cache.close()
        return ticks, elapsed

    ticks, elapsed = asyncio.run(run())
    assert elapsed > 0 and ticks > 10  # the loop went round while SQLite worked in the writer thread
