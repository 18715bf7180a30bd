"""The run store: every sample's state in SQLite (WAL mode) in the run directory.

A sample is written once when it is finished (its whole Trace, committed in one transaction), so
after a crash a rerun keeps every finished sample and redoes only the rest. Rows are ordered by
``seq``, the sample's position in the curated source stream, so outputs are the same however
the work was interleaved or interrupted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmat_core.models import Rejected, Trace

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    subset TEXT,
    status TEXT NOT NULL,
    failure TEXT,
    tools TEXT,
    question TEXT,
    reflected_by TEXT,
    cost REAL NOT NULL DEFAULT 0,
    trace TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_status ON samples(status);
CREATE INDEX IF NOT EXISTS samples_source ON samples(source, subset);
CREATE TABLE IF NOT EXISTS rejected (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    subset TEXT,
    row TEXT NOT NULL UNIQUE,
    reason TEXT NOT NULL,
    detail TEXT,
    stage TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

STORE_FILE = "run.sqlite"


class RunStore:
    """Finished traces, rejected rows and run metadata of one run directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._pending: list[tuple[Any, ...]] = []

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        """The store of ``run_dir``."""
        return cls(run_dir / STORE_FILE)

    # -- metadata ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any | None:
        """A stored metadata value (JSON), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        """Store a metadata value (JSON)."""
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- samples ----------------------------------------------------------------------------

    def finished_ids(self) -> set[str]:
        """Ids of samples already finished (kept, dropped or failed for good)."""
        return {row[0] for row in self._db.execute("SELECT id FROM samples")}

    def add_trace(self, seq: int, trace: Trace) -> None:
        """Queue a finished trace; :meth:`flush` commits queued traces in one transaction."""
        tools = sorted({call.name for step in trace.steps for call in step.tool_calls})
        reflected_by = sorted({v.critic for v in trace.verdicts if v.verdict == "fix"})
        self._pending.append(
            (seq, trace.id, trace.sample.source, trace.sample.subset, trace.status, trace.failure,
             ",".join(tools), trace.sample.question, ",".join(reflected_by), trace.usage.cost_usd,
             trace.model_dump_json())
        )

    def flush(self) -> None:
        """Commit queued traces atomically."""
        if not self._pending:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO samples(seq, id, source, subset, status, failure, tools, question, "
                "reflected_by, cost, trace) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                self._pending,
            )
        self._pending.clear()

    def add_rejected(self, rejected: Rejected) -> None:
        """Record a quarantined row (once per row)."""
        self._db.execute(
            "INSERT OR IGNORE INTO rejected(source, subset, row, reason, detail, stage) VALUES (?,?,?,?,?,?)",
            (rejected.source, rejected.subset, rejected.row, rejected.reason, rejected.detail, rejected.stage),
        )

    def traces(self, *, status: str | None = None) -> Iterator[Trace]:
        """Stored traces in ``seq`` order, streamed."""
        query = "SELECT trace FROM samples" + (" WHERE status=?" if status else "") + " ORDER BY seq"
        cursor = self._db.execute(query, (status,) if status else ())
        for (text,) in cursor:
            yield Trace.model_validate_json(text)

    def trace(self, sample_id: str) -> Trace | None:
        """One stored trace by sample id."""
        row = self._db.execute("SELECT trace FROM samples WHERE id=?", (sample_id,)).fetchone()
        return Trace.model_validate_json(row[0]) if row else None

    def rejected(self) -> Iterator[Rejected]:
        """Quarantined rows in the order they were met."""
        for row in self._db.execute("SELECT source, subset, row, reason, detail, stage FROM rejected ORDER BY n"):
            yield Rejected(source=row[0], subset=row[1], row=row[2], reason=row[3], detail=row[4] or "", stage=row[5] or "source")

    def status_counts(self) -> dict[str, int]:
        """Finished samples by status."""
        return dict(self._db.execute("SELECT status, COUNT(*) FROM samples GROUP BY status").fetchall())

    def failure_counts(self) -> dict[str, int]:
        """Failures and drops by reason."""
        rows = self._db.execute("SELECT failure, COUNT(*) FROM samples WHERE failure IS NOT NULL GROUP BY failure")
        return dict(rows.fetchall())

    def rejected_counts(self) -> dict[str, int]:
        """Quarantined rows by reason."""
        return dict(self._db.execute("SELECT reason, COUNT(*) FROM rejected GROUP BY reason").fetchall())

    def count(self) -> int:
        """Number of finished samples."""
        return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def yield_rows(self) -> list[tuple[Any, ...]]:
        """(source, subset, status, failure, reflected_by, count, cost) groups for yield accounting."""
        return self._db.execute(
            "SELECT source, COALESCE(subset, ''), status, COALESCE(failure, ''), COALESCE(reflected_by, ''), "
            "COUNT(*), SUM(cost) FROM samples GROUP BY 1, 2, 3, 4, 5"
        ).fetchall()

    def rejected_rows(self) -> list[tuple[Any, ...]]:
        """(source, subset, reason, count) groups of quarantined rows."""
        return self._db.execute(
            "SELECT source, COALESCE(subset, ''), reason, COUNT(*) FROM rejected GROUP BY 1, 2, 3"
        ).fetchall()

    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for read-only queries (the viewer)."""
        return self._db

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        self._db.close()
