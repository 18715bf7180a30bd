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
from mmat_core.secrets import scrub
from mmat_core.trace_queries import reflected_by as reflected_by_critics

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
    trace TEXT NOT NULL,
    dedup INTEGER,
    source_fp INTEGER
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
        # Ray workers and `mmat status` may read while a run writes: wait for a lock, do not fail.
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}
        # Stores written before these columns existed: their samples hold NULL (a resume
        # computes dedup keys again, and records the source fingerprints it meets).
        if "dedup" not in columns:
            self._db.execute("ALTER TABLE samples ADD COLUMN dedup INTEGER")
        if "source_fp" not in columns:
            self._db.execute("ALTER TABLE samples ADD COLUMN source_fp INTEGER")
        # What a resume reads of every finished sample, apart from the traces: scanning this index
        # reads tens of megabytes where the table holds gigabytes (a trace is kilobytes). It
        # leads with seq, so finished samples append to it as they append to the table.
        indexed = [row[2] for row in self._db.execute("PRAGMA index_info(samples_resume)")]
        if indexed and "source_fp" not in indexed:
            self._db.execute("DROP INDEX samples_resume")  # an older store's: built again with the fingerprint
        self._db.execute("CREATE INDEX IF NOT EXISTS samples_resume ON samples(seq, id, status, failure, dedup, source_fp)")
        self._pending: list[tuple[Any, ...]] = []
        self._pending_moves: list[tuple[int, str]] = []

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        """The store of ``run_dir``."""
        return cls(run_dir / STORE_FILE)

    @classmethod
    def open_existing(cls, run_dir: Path, *, hint: str = "is this an mmat run directory?") -> RunStore:
        """The store of a run directory that has one; never creates one. The one check of every
        command that reads a finished run: ``no run store (run.sqlite) in DIR: {hint}`` otherwise."""
        from mmat_core.errors import ConfigError

        if not (run_dir / STORE_FILE).is_file():
            raise ConfigError(f"no run store ({STORE_FILE}) in {run_dir}: {hint}", file=str(run_dir))
        return cls.open(run_dir)

    # -- metadata ---------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any | None:
        """A stored metadata value (JSON), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        """Store a metadata value (JSON)."""
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- samples ----------------------------------------------------------------------------

    def finished_seqs(self, *, retry_failed_calls: bool = False) -> dict[str, int]:
        """Sample id -> stored ``seq`` of every finished sample.

        With ``retry_failed_calls`` the samples that failed only because a model call failed
        (rate limits, server errors, timeouts that outlasted every retry) are left out, so a
        resume redoes them; their finished calls still come from the cache.
        """
        query = "SELECT id, seq FROM samples INDEXED BY samples_resume"
        if retry_failed_calls:
            query += " WHERE NOT (status='failed' AND (failure LIKE 'llm_error:%' OR failure LIKE 'critic_llm_error:%'))"
        return dict(self._db.execute(query))

    def finished_state(self, *, retry_failed_calls: bool = False) -> tuple[dict[str, int], dict[str, int | None]]:
        """(id -> seq, id -> source fingerprint) of every finished sample, as :meth:`finished_seqs`
        selects them, in one scan of the covering index (the two maps share their id strings).
        The fingerprint is None for a sample stored without one (by an older mmat)."""
        query = "SELECT id, seq, source_fp FROM samples INDEXED BY samples_resume"
        if retry_failed_calls:
            query += " WHERE NOT (status='failed' AND (failure LIKE 'llm_error:%' OR failure LIKE 'critic_llm_error:%'))"
        seqs: dict[str, int] = {}
        fingerprints: dict[str, int | None] = {}
        for sample_id, seq, fingerprint in self._db.execute(query):
            seqs[sample_id] = seq
            fingerprints[sample_id] = fingerprint
        return seqs, fingerprints

    def set_fingerprints(self, pairs: list[tuple[str, int]]) -> None:
        """Record the source fingerprints of finished samples stored without one, in one transaction."""
        if not pairs:
            return
        self.flush()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE samples SET source_fp=? WHERE id=?", [(fp, i) for i, fp in pairs])

    def forget(self, ids: list[str]) -> int:
        """Delete finished samples by id (their source row is now quarantined and the run was
        asked to regenerate changed rows); returns how many were deleted."""
        if not ids:
            return 0
        self.flush()
        deleted = 0
        with self._db:
            self._db.execute("BEGIN")
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                deleted += self._db.execute(f"DELETE FROM samples WHERE id IN ({marks})", chunk).rowcount
        return deleted

    # -- re-sequencing (a changed configuration applied on resume) ------------------------------

    def retire_order(self) -> int:
        """Move every finished sample to a negative ``seq`` (kept, but out of the output order)
        until the new curated stream gives it its place again; returns how many were moved."""
        self.flush()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE samples SET seq = -seq WHERE seq > 0")
        return self.count()

    def move(self, sample_id: str, seq: int) -> None:
        """Queue giving a finished sample a new ``seq`` (committed with the next :meth:`flush`)."""
        self._pending_moves.append((seq, sample_id))

    def drop_retired(self) -> list[str]:
        """Delete finished samples the current stream no longer contains (still at a negative
        ``seq`` after a full pass); returns their ids."""
        self.flush()
        ids = [row[0] for row in self._db.execute("SELECT id FROM samples WHERE seq < 0 ORDER BY seq DESC")]
        if ids:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM samples WHERE seq < 0")
        return ids

    def merge(self, other: Path) -> int:
        """Copy the finished samples and quarantined rows of another store (a Ray worker's) into
        this one, in one transaction; returns the number of samples copied."""
        self.flush()
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(samples)")]
        names = ", ".join(columns)
        rejected = "source, subset, row, reason, detail, stage"
        self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            with self._db:
                self._db.execute("BEGIN")
                copied = self._db.execute(f"INSERT OR REPLACE INTO samples({names}) SELECT {names} FROM other.samples").rowcount
                self._db.execute(f"INSERT OR IGNORE INTO rejected({rejected}) SELECT {rejected} FROM other.rejected ORDER BY n")
        finally:
            self._db.execute("DETACH DATABASE other")
        return int(copied)

    def dedup_keys(self) -> list[int] | None:
        """The curation dedup keys of every finished sample, or None when some sample was stored
        without one (by an older mmat, or with dedup off): then curation computes them again."""
        if self._db.execute("SELECT 1 FROM samples INDEXED BY samples_resume WHERE dedup IS NULL LIMIT 1").fetchone():
            return None
        return [row[0] for row in self._db.execute("SELECT dedup FROM samples INDEXED BY samples_resume")]

    def dedup_key_of(self, sample_id: str) -> int | None:
        """The curation dedup key stored with one finished sample (None when none was)."""
        row = self._db.execute("SELECT dedup FROM samples WHERE id=?", (sample_id,)).fetchone()
        return row[0] if row else None

    def add_trace(self, seq: int, trace: Trace, dedup: int | None = None, fingerprint: int | None = None) -> None:
        """Queue a finished trace (with the curation dedup key of its sample and the fingerprint
        of its source row, kept for the next resume); :meth:`flush` commits queued traces in one
        transaction."""
        tools = sorted({call.name for step in trace.steps for call in step.tool_calls})
        # The critics whose reflection was really spliced in (as run.json counts them).
        reflected_by = sorted(reflected_by_critics(trace))
        self._pending.append(
            # No credential is ever stored (mmat_core/secrets.py).
            (seq, trace.id, trace.sample.source, trace.sample.subset, trace.status,
             trace.failure and scrub(trace.failure), ",".join(tools), scrub(trace.sample.question),
             ",".join(reflected_by), trace.usage.cost_usd, scrub(trace.model_dump_json()), dedup, fingerprint)
        )

    def take_pending(self) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
        """Take the queued traces and moves out of the queue, to :meth:`commit` later (after the
        cache calls they rely on are on disk); :meth:`requeue` puts them back if that fails."""
        taken = (self._pending, self._pending_moves)
        self._pending, self._pending_moves = [], []
        return taken

    def requeue(self, taken: tuple[list[tuple[Any, ...]], list[tuple[int, str]]]) -> None:
        """Put traces and moves from :meth:`take_pending` back at the front of the queue."""
        self._pending[:0] = taken[0]
        self._pending_moves[:0] = taken[1]

    def commit(self, taken: tuple[list[tuple[Any, ...]], list[tuple[int, str]]]) -> None:
        """Commit traces and moves from :meth:`take_pending` atomically."""
        rows, moves = taken
        if not rows and not moves:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._park_occupants({seq: sample_id for seq, sample_id in moves} | {row[0]: row[1] for row in rows})
            if moves:
                self._db.executemany("UPDATE samples SET seq=? WHERE id=?", moves)
            self._db.executemany(
                "INSERT OR REPLACE INTO samples(seq, id, source, subset, status, failure, tools, question, "
                "reflected_by, cost, trace, dedup, source_fp) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

    def flush(self) -> None:
        """Commit queued traces (and queued moves) atomically."""
        taken = self.take_pending()
        try:
            self.commit(taken)
        except BaseException:
            self.requeue(taken)
            raise

    def _park_occupants(self, targets: dict[int, str]) -> None:
        """Before samples take their places (``seq -> id``): a *different* finished sample still
        sitting at one of those places (the source changed between runs) moves to a fresh negative
        seq, retired until the stream gives it its new place, instead of being overwritten."""
        if not targets:
            return
        seqs = list(targets)
        occupants: list[tuple[int, str]] = []
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            occupants += self._db.execute(f"SELECT seq, id FROM samples WHERE seq IN ({marks})", chunk).fetchall()
        displaced = [(seq, sample_id) for seq, sample_id in occupants if targets[seq] != sample_id]
        if not displaced:
            return
        park = min(int(self._db.execute("SELECT MIN(seq) FROM samples").fetchone()[0] or 0), 0)
        for seq, _ in displaced:
            park -= 1
            self._db.execute("UPDATE samples SET seq=? WHERE seq=?", (park, seq))

    def clear_rejected(self, stages: tuple[str, ...] = ("source", "curation")) -> None:
        """Forget rows quarantined while reading the stream: a new full pass records them again
        (a row fixed since, e.g. by a corrected field mapping, is then no longer listed)."""
        marks = ",".join("?" * len(stages))
        self._db.execute(f"DELETE FROM rejected WHERE stage IN ({marks})", stages)

    @property
    def pending(self) -> int:
        """Traces queued but not committed yet."""
        return len(self._pending)

    def add_rejected(self, rejected: Rejected) -> None:
        """Record a quarantined row (once per row)."""
        self._db.execute(
            "INSERT OR IGNORE INTO rejected(source, subset, row, reason, detail, stage) VALUES (?,?,?,?,?,?)",
            (rejected.source, rejected.subset, rejected.row, rejected.reason,
             rejected.detail and scrub(rejected.detail), rejected.stage),
        )

    def traces(self, *, status: str | None = None) -> Iterator[Trace]:
        """Stored traces in ``seq`` order, streamed."""
        # Samples at a negative seq were finished under an earlier configuration and are not
        # (yet) part of the current stream: they are never written out.
        query = "SELECT trace FROM samples WHERE seq > 0" + (" AND status=?" if status else "") + " ORDER BY seq"
        cursor = self._db.execute(query, (status,) if status else ())
        for (text,) in cursor:
            yield Trace.model_validate_json(text)

    def trace_json(self, *, status: str | None = None, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Stored traces as raw JSON bytes in ``seq`` order, optionally only ``start < seq <= stop``.

        No parsing and no validation: the bulk export parses these itself (they were validated when
        written). Read as BLOB so SQLite hands over the bytes without decoding them to ``str``.
        """
        query = "SELECT CAST(trace AS BLOB) FROM samples WHERE seq > ?"
        args: list[Any] = [start]
        if stop is not None:
            query += " AND seq <= ?"
            args.append(stop)
        if status:
            query += " AND status = ?"
            args.append(status)
        for (data,) in self._db.execute(query + " ORDER BY seq", args):
            yield data

    def seq_bounds(self) -> tuple[int, int]:
        """(smallest, largest) ``seq`` stored, (0, 0) when empty: lets exports split the work."""
        low, high = self._db.execute("SELECT MIN(seq), MAX(seq) FROM samples WHERE seq > 0").fetchone()
        return int(low or 0), int(high or 0)

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

    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for read-only queries (the viewer)."""
        return self._db

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        self._db.close()
