"""The viewer's own index of a run: filters, full-text search and dashboard figures.

The run store is built for writing and resuming, not for browsing: its rows hold whole Traces,
so any filter that is not one of its indexed columns would read gigabytes on a large run. The
catalog is a small SQLite file beside the run (``viewer-index.sqlite``, or a temporary folder
when the run directory is not writable) holding, per sample, the columns the page filters and
plots on, a ``tool_uses`` and a ``verdicts`` table keyed for keyset paging, and an FTS5 table
over questions, thoughts and answers. It is filled incrementally in a background thread, so a
run still being written is indexed as it grows; until the first pass is done, lists are served
straight from the run store (by ``seq``, the store's primary key) and only searches are slower.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmat_plugins.viewer.dataset import QUARANTINED, Dataset, row_kind, summarise

from mmat_core.models import KEPT_STATUSES

INDEX_FILE = "viewer-index.sqlite"
#: Bump when the catalog's layout changes: an older file is rebuilt.
CATALOG_VERSION = "1"
_BATCH = 1000
#: Counts above this are shown as "N+": counting a broad filter must not cost a full scan.
COUNT_CAP = 100_000
#: Traces read (spread evenly over the run) for per-call latency percentiles.
LATENCY_SAMPLE = 2000
#: A run without stored figures (running, or made before ``mmat stats``) is counted whole up to
#: this many traces; above it the comparison with the paper is estimated from this many spread
#: evenly over the run (shares, which is what the comparison shows, need no more).
PAPER_COMPARE_SAMPLE = 20_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    seq INTEGER PRIMARY KEY, id TEXT, source TEXT, subset TEXT, status TEXT, failure TEXT, tools TEXT,
    question TEXT, reflected_by TEXT, steps INTEGER, reflections INTEGER, prompt_tokens INTEGER,
    completion_tokens INTEGER, cost REAL, latency REAL
);
CREATE INDEX IF NOT EXISTS rows_status ON rows(status);
CREATE INDEX IF NOT EXISTS rows_source ON rows(source, subset);
CREATE INDEX IF NOT EXISTS rows_subset ON rows(subset);
CREATE TABLE IF NOT EXISTS tool_uses (tool TEXT, seq INTEGER, calls INTEGER, errors INTEGER, PRIMARY KEY (tool, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verdicts (critic TEXT, verdict TEXT, seq INTEGER, PRIMARY KEY (critic, verdict, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS verdicts_kind ON verdicts(verdict, seq);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(question, thoughts, answer, content='', tokenize='unicode61 remove_diacritics 2');
"""

_LIST_COLUMNS = "seq, id, source, subset, status, failure, tools, substr(question, 1, 300), reflected_by, cost"


@dataclass
class Filters:
    """What the sample list is narrowed to; empty fields do not filter."""

    source: str = ""
    subset: str = ""
    status: str = ""
    tool: str = ""
    verdict: str = ""  # "critic:verdict", or "*:verdict" for any critic
    q: str = ""

    @classmethod
    def from_query(cls, query: dict[str, str]) -> Filters:
        """Filters from URL query parameters."""
        return cls(**{name: query.get(name, "").strip() for name in cls.__dataclass_fields__})


def fts_query(text: str) -> str | None:
    """The words of ``text`` as an FTS5 query: every word must occur, the last may be a prefix.

    Each word is quoted so that nothing the user types is read as FTS5 syntax."""
    words = re.findall(r"\w+", text)
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {}

    def pick(p: float) -> float:
        return values[min(len(values) - 1, max(0, math.ceil(p * len(values)) - 1))]

    return {"n": len(values), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": values[-1]}


def _equal_filters(f: Filters, columns: tuple[str, ...]) -> tuple[str, list[Any]]:
    """``AND column = ?`` for each of ``columns`` that the filters set: how every list's WHERE begins."""
    where, params = "", []
    for column in columns:
        value = getattr(f, column)
        if value:
            where += f" AND {column} = ?"
            params.append(value)
    return where, params


def _keyset_page(db: sqlite3.Connection, columns: str, table: str, key: str, where: str, params: list[Any],
                 after: int, limit: int) -> tuple[list[Any], dict[str, Any]]:
    """Up to ``limit`` rows of ``table`` after ``after`` on ``key`` (the first of ``columns``), and the
    paging fields of a list page: ``next`` (None at the end), ``count`` and ``count_capped``."""
    rows = db.execute(f"SELECT {columns} FROM {table} WHERE {key} > ? {where} ORDER BY {key} LIMIT ?",
                      [after, *params, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    count = db.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE 1 {where} LIMIT ?)", [*params, COUNT_CAP + 1]).fetchone()[0]
    return rows, {"next": rows[-1][0] if more else None, "count": min(count, COUNT_CAP), "count_capped": count > COUNT_CAP}


class Catalog:
    """The index of one dataset, kept up to date by :meth:`refresh`."""

    def __init__(self, dataset: Dataset, index_dir: Path | None = None) -> None:
        self.dataset = dataset
        self.path = self._choose_path(index_dir)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._write_lock = threading.Lock()
        self.built = False  # the first full pass has finished
        self.indexed = 0
        self.total = 0
        self._cache: dict[str, tuple[str, float, Any]] = {}
        self._open_writer()

    # -- files ----------------------------------------------------------------------------------

    def _choose_path(self, index_dir: Path | None) -> Path:
        if index_dir is not None:
            index_dir.mkdir(parents=True, exist_ok=True)
            return index_dir / INDEX_FILE
        if self.dataset.temp_dir is not None:
            return self.dataset.temp_dir / INDEX_FILE
        if os.access(self.dataset.root, os.W_OK):
            return self.dataset.root / INDEX_FILE
        # A read-only run: index into a temporary folder for this session.
        self._temp = Path(tempfile.mkdtemp(prefix="mmat-view-index-"))
        return self._temp / INDEX_FILE

    def _identity(self) -> str:
        """Tells this run from another written later into the same directory."""
        config = self.dataset.connect().execute("SELECT value FROM meta WHERE key='config_hash'").fetchone()
        return json.dumps([CATALOG_VERSION, self.dataset.store_path.stat().st_ino, config[0] if config else None])

    def _open_writer(self) -> None:
        self._writer = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA synchronous=OFF")  # a lost index is rebuilt, never trusted half-written
        self._writer.executescript(_SCHEMA)

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.db = db
            self._readers.append(db)
        return db

    def close(self) -> None:
        """Close every reader (whatever thread opened it) and the writer."""
        for db in self._readers:
            db.close()
        self._readers.clear()
        self._local = threading.local()
        self._writer.close()

    # -- indexing -------------------------------------------------------------------------------

    def refresh(self, *, stop: threading.Event | None = None) -> int:
        """Index every store row not yet in the catalog; returns how many were added."""
        with self._write_lock:
            store = self.dataset.connect()
            self.total = int(store.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
            identity = self._identity() if self.total else None
            row = self._writer.execute("SELECT value FROM info WHERE key='identity'").fetchone()
            if (identity is not None and row is not None and row[0] != identity) or not self._rows_still_match(store):
                self._reset()
            if identity is not None and (row is None or row[0] != identity):
                self._writer.execute("INSERT OR REPLACE INTO info VALUES ('identity', ?)", (identity,))
            self.indexed = int(self._writer.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
            added = 0
            if self.indexed < self.total:
                for batch in self._missing(store):
                    if stop is not None and stop.is_set():
                        break
                    added += self._index(store, batch)
                    self.indexed += len(batch)
                if added:
                    self._writer.execute("ANALYZE")  # the planner picks the selective index for filters
            self.built = self.indexed >= self.total or self.built
            return added

    def _rows_still_match(self, store: sqlite3.Connection) -> bool:
        """Whether the first and last indexed samples are still in the store at the same seq: a
        run deleted and written again into the same directory fails this and is re-indexed."""
        probes = self._writer.execute(
            "SELECT seq, id FROM rows WHERE seq = (SELECT MIN(seq) FROM rows) OR seq = (SELECT MAX(seq) FROM rows)").fetchall()
        for seq, sample_id in probes:
            found = store.execute("SELECT id FROM samples WHERE seq = ?", (seq,)).fetchone()
            if found is None or found[0] != sample_id:
                return False
        return True

    def _reset(self) -> None:
        self._writer.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        self._open_writer()
        self.built = False

    def _missing(self, store: sqlite3.Connection) -> Any:
        """Batches of store seqs absent from the catalog. Rows usually arrive in seq order, so the
        tail past the catalog's largest seq is checked first; a full merge runs only when rows
        finished out of order."""
        top = self._writer.execute("SELECT COALESCE(MAX(seq), 0) FROM rows").fetchone()[0]
        tail = [r[0] for r in store.execute("SELECT seq FROM samples WHERE seq > ? ORDER BY seq", (top,))]
        if self.indexed + len(tail) < self.total:
            known = {r[0] for r in self._writer.execute("SELECT seq FROM rows")}
            tail = [r[0] for r in store.execute("SELECT seq FROM samples ORDER BY seq") if r[0] not in known]
        for start in range(0, len(tail), _BATCH):
            yield tail[start:start + _BATCH]

    def _index(self, store: sqlite3.Connection, seqs: list[int]) -> int:
        marks = ",".join("?" * len(seqs))
        rows = store.execute(
            f"SELECT seq, id, source, subset, status, failure, tools, question, reflected_by, trace FROM samples WHERE seq IN ({marks})",
            seqs,
        ).fetchall()
        catalog_rows, tool_rows, verdict_rows, text_rows = [], [], [], []
        for seq, sample_id, source, subset, status, failure, tools, question, reflected_by, trace in rows:
            try:
                obj = json.loads(trace)
                summary = summarise(obj, row_kind(obj))
            except ValueError:
                obj, summary = {}, summarise({}, "rejected")
            catalog_rows.append((seq, sample_id, source, subset, status, failure, tools, question, reflected_by,
                                 summary.steps, summary.reflections, summary.prompt_tokens, summary.completion_tokens,
                                 summary.cost, summary.latency))
            tool_rows.extend((name, seq, calls, errors) for name, (calls, errors) in summary.tool_calls.items())
            verdict_rows.extend((critic, verdict, seq) for critic, verdict in summary.verdicts)
            text_rows.append((seq, question or "", summary.thoughts, summary.answer))
        with self._writer:
            self._writer.execute("BEGIN")
            self._writer.executemany(f"INSERT OR REPLACE INTO rows VALUES ({','.join('?' * 15)})", catalog_rows)
            self._writer.executemany("INSERT OR REPLACE INTO tool_uses VALUES (?,?,?,?)", tool_rows)
            self._writer.executemany("INSERT OR IGNORE INTO verdicts VALUES (?,?,?)", verdict_rows)
            self._writer.executemany("INSERT INTO fts(rowid, question, thoughts, answer) VALUES (?,?,?,?)", text_rows)
        return len(catalog_rows)

    # -- lists ----------------------------------------------------------------------------------

    def page(self, filters: Filters, after: int = 0, limit: int = 50) -> dict[str, Any]:
        """One page of samples after ``after`` (keyset paging on ``seq``), with a capped count."""
        limit = max(1, min(limit, 500))
        if filters.status == QUARANTINED:
            return self._quarantine_page(filters, after, limit)
        if self.built:
            where, params = self._catalog_where(filters)
            db, table, via = self._reader(), "rows", "index"
        else:
            where, params = self._store_where(filters)
            db, table, via = self.dataset.connect(), "samples", "store"
        rows, paging = _keyset_page(db, _LIST_COLUMNS, table, "seq", where, params, after, limit)
        keys = ("seq", "id", "source", "subset", "status", "failure", "tools", "question", "reflected_by", "cost")
        return {"rows": [dict(zip(keys, r)) for r in rows], **paging, "via": via}

    def _catalog_where(self, f: Filters) -> tuple[str, list[Any]]:
        where, params = _equal_filters(f, ("status", "source", "subset"))
        if f.tool:
            where += " AND seq IN (SELECT seq FROM tool_uses WHERE tool = ?)"
            params.append(f.tool)
        if f.verdict:
            critic, _, verdict = f.verdict.rpartition(":")
            if critic in ("", "*"):
                where += " AND seq IN (SELECT seq FROM verdicts WHERE verdict = ?)"
                params.append(verdict)
            else:
                where += " AND seq IN (SELECT seq FROM verdicts WHERE critic = ? AND verdict = ?)"
                params += [critic, verdict]
        if f.q:
            match = fts_query(f.q)
            if match:
                where += " AND seq IN (SELECT rowid FROM fts WHERE fts MATCH ?)"
                params.append(match)
            else:
                where += " AND instr(lower(question), lower(?)) > 0"
                params.append(f.q)
        return where, params

    def _store_where(self, f: Filters) -> tuple[str, list[Any]]:
        """The same filters straight on the run store (slower; used while the catalog builds)."""
        where, params = _equal_filters(f, ("status", "source", "subset"))
        if f.tool:
            where += " AND instr(',' || tools || ',', ?) > 0"
            params.append(f",{f.tool},")
        if f.verdict:
            critic, _, verdict = f.verdict.rpartition(":")
            where += (" AND EXISTS (SELECT 1 FROM json_each(trace, '$.verdicts') WHERE json_extract(value, '$.verdict') = ?"
                      + ("" if critic in ("", "*") else " AND json_extract(value, '$.critic') = ?") + ")")
            params += [verdict] if critic in ("", "*") else [verdict, critic]
        if f.q:
            where += " AND (instr(lower(question), lower(?)) > 0 OR instr(lower(trace), lower(?)) > 0)"
            params += [f.q, f.q]
        return where, params

    def _quarantine_page(self, f: Filters, after: int, limit: int) -> dict[str, Any]:
        where, params = _equal_filters(f, ("source", "subset"))
        if f.q:
            where += " AND (instr(lower(row || ' ' || reason || ' ' || COALESCE(detail, '')), lower(?)) > 0)"
            params.append(f.q)
        db = self.dataset.connect()
        keys = ("n", "source", "subset", "row", "reason", "detail", "stage")
        rows, paging = _keyset_page(db, ", ".join(keys), "rejected", "n", where, params, after, limit)
        return {"rows": [{**dict(zip(keys, r)), "status": QUARANTINED} for r in rows], **paging, "via": "store", "quarantine": True}

    def neighbours(self, seq: int, filters: Filters) -> dict[str, int | None]:
        """The previous and next sample under the same filters (for stepping through a list)."""
        if filters.status == QUARANTINED:
            return {"prev": None, "next": None}
        where, params = self._catalog_where(filters) if self.built else self._store_where(filters)
        db, table = (self._reader(), "rows") if self.built else (self.dataset.connect(), "samples")
        prev = db.execute(f"SELECT seq FROM {table} WHERE seq < ? {where} ORDER BY seq DESC LIMIT 1", [seq, *params]).fetchone()
        nxt = db.execute(f"SELECT seq FROM {table} WHERE seq > ? {where} ORDER BY seq LIMIT 1", [seq, *params]).fetchone()
        return {"prev": prev[0] if prev else None, "next": nxt[0] if nxt else None}

    # -- facets and dashboard -------------------------------------------------------------------

    def _cached(self, key: str, compute: Any, min_age_s: float = 0.0) -> Any:
        """``compute()`` cached until the run changes (and at most every ``min_age_s`` while it runs)."""
        version = self.dataset.version() + f"/{self.indexed}"
        hit = self._cache.get(key)
        if hit and (hit[0] == version or time.monotonic() - hit[1] < min_age_s):
            return hit[2]
        value = compute()
        self._cache[key] = (version, time.monotonic(), value)
        return value

    def facets(self) -> dict[str, Any]:
        """Values the filters can take, with counts."""
        return self._cached("facets", self._facets, min_age_s=2.0)

    def _facets(self) -> dict[str, Any]:
        store = self.dataset.connect()
        sources = store.execute("SELECT source, COALESCE(subset, ''), COUNT(*) FROM samples GROUP BY 1, 2").fetchall()
        statuses = dict(store.execute("SELECT status, COUNT(*) FROM samples GROUP BY status").fetchall())
        statuses[QUARANTINED] = store.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
        for source, subset, count in store.execute("SELECT source, COALESCE(subset, ''), COUNT(*) FROM rejected GROUP BY 1, 2"):
            if not any(s == source and b == subset for s, b, _ in sources):
                sources.append((source, subset, 0))
        reader = self._reader()
        tools = reader.execute("SELECT tool, COUNT(*) FROM tool_uses GROUP BY tool ORDER BY tool").fetchall()
        verdicts = reader.execute("SELECT critic, verdict, COUNT(*) FROM verdicts GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
        return {
            "sources": sorted({s for s, _, _ in sources}),
            "subsets": sorted({f"{s}/{b}" for s, b, _ in sources if b}),
            "subset_counts": [{"source": s, "subset": b, "count": c} for s, b, c in sorted(sources)],
            "statuses": statuses,
            "tools": [{"name": t, "count": c} for t, c in tools],
            "verdicts": [{"critic": c, "verdict": v, "count": n} for c, v, n in verdicts],
        }

    def dashboard(self) -> dict[str, Any]:
        """Every figure of the dashboard (cached per run version)."""
        return self._cached("dashboard", self._dashboard, min_age_s=5.0)

    def _dashboard(self) -> dict[str, Any]:
        db = self._reader()
        store = self.dataset.connect()
        by_source: dict[str, dict[str, int]] = {}
        for source, subset, status, count in db.execute("SELECT source, COALESCE(subset, ''), status, COUNT(*) FROM rows GROUP BY 1, 2, 3"):
            for key in (source, f"{source}/{subset}" if subset else None):
                if key:
                    by_source.setdefault(key, {}).setdefault(status, 0)
                    by_source[key][status] += count
        for source, subset, count in store.execute("SELECT source, COALESCE(subset, ''), COUNT(*) FROM rejected GROUP BY 1, 2"):
            for key in (source, f"{source}/{subset}" if subset else None):
                if key:
                    by_source.setdefault(key, {})[QUARANTINED] = by_source.get(key, {}).get(QUARANTINED, 0) + count
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM rows GROUP BY status").fetchall())
        quarantined = store.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
        generated = sum(statuses.values())
        kept = sum(statuses.get(s, 0) for s in KEPT_STATUSES)
        verification_failed = db.execute("SELECT COUNT(*) FROM rows WHERE status = 'dropped' AND failure LIKE 'answer_match%'").fetchone()[0]
        stages = [
            {"stage": "read", "count": generated + quarantined},
            {"stage": "curated (not quarantined)", "count": generated},
            {"stage": "generated (not failed)", "count": generated - statuses.get("failed", 0)},
            {"stage": "verified (answer matched)", "count": generated - statuses.get("failed", 0) - verification_failed},
            {"stage": "kept", "count": kept},
        ]
        failures = db.execute(
            "SELECT CASE WHEN instr(failure, ':') > 0 THEN substr(failure, 1, instr(failure, ':') - 1) ELSE failure END, COUNT(*) "
            "FROM rows WHERE failure IS NOT NULL AND failure != '' GROUP BY 1 ORDER BY 2 DESC").fetchall()
        rejected = store.execute("SELECT reason, COUNT(*) FROM rejected GROUP BY reason ORDER BY 2 DESC").fetchall()
        totals = db.execute("SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost), 0), "
                            "COALESCE(SUM(latency), 0) FROM rows").fetchone()
        cost_by_source = db.execute("SELECT source, SUM(cost), SUM(prompt_tokens + completion_tokens) FROM rows GROUP BY source").fetchall()
        critics = db.execute("SELECT critic, verdict, COUNT(*) FROM verdicts GROUP BY 1, 2").fetchall()
        reflection: dict[str, dict[str, int]] = {}
        for critic, verdict, count in critics:
            reflection.setdefault(critic, {})[verdict] = count
        return {
            "generated": generated,
            "quarantined": quarantined,
            "statuses": statuses,
            "stages": stages,
            "by_source": [{"source": k, "counts": v} for k, v in sorted(by_source.items())],
            "steps": [{"steps": s, "count": c} for s, c in db.execute("SELECT steps, COUNT(*) FROM rows GROUP BY steps ORDER BY steps")],
            "tool_calls": [{"tool": t, "calls": c, "errors": e, "samples": n} for t, c, e, n in
                           db.execute("SELECT tool, SUM(calls), SUM(errors), COUNT(*) FROM tool_uses GROUP BY tool ORDER BY 2 DESC")],
            "reflection": {
                "reflected": statuses.get("reflected", 0),
                "rate": statuses.get("reflected", 0) / generated if generated else 0.0,
                "with_reflection_steps": db.execute("SELECT COUNT(*) FROM rows WHERE reflections > 0").fetchone()[0],
                "critics": [{"critic": c, "verdicts": v} for c, v in sorted(reflection.items())],
            },
            "usage": {"prompt_tokens": totals[0], "completion_tokens": totals[1], "cost_usd": totals[2], "latency_s": totals[3],
                      "cost_per_kept": totals[2] / kept if kept else None,
                      "by_source": [{"source": s, "cost_usd": c or 0.0, "tokens": t or 0} for s, c, t in cost_by_source]},
            "latency": self._latency(store),
            "failures": [{"reason": r, "count": c} for r, c in failures],
            "quarantine_reasons": [{"reason": r, "count": c} for r, c in rejected],
        }

    def paper_comparison(self) -> dict[str, Any]:
        """The run's figures beside the MMAT-1M paper's (what ``mmat stats --compare paper``
        prints), cached per run version."""
        return self._cached("paper", self._paper_comparison, min_age_s=30.0)

    def _paper_comparison(self) -> dict[str, Any]:
        from mmat_core import paper_figures
        from mmat_core.stats import RunStats, compare_to_paper, stats_from_connection

        manifest = self.dataset.manifest()
        stored = (manifest or {}).get("stats") if self.dataset.complete() else None
        total = int(self.dataset.connect().execute("SELECT COUNT(*) FROM samples WHERE seq > 0").fetchone()[0])
        counted = total
        if isinstance(stored, dict):
            stats, origin = RunStats.model_validate(stored), "run.json"
        elif total <= PAPER_COMPARE_SAMPLE:
            stats, origin = stats_from_connection(self.dataset.connect()), "store"
        else:
            low, high = self.dataset.connect().execute("SELECT MIN(seq), MAX(seq) FROM samples WHERE seq > 0").fetchone()
            step = max(1, (high - low + 1) // PAPER_COMPARE_SAMPLE)
            stats = stats_from_connection(self.dataset.connect(), list(range(low, high + 1, step))[:PAPER_COMPARE_SAMPLE])
            origin, counted = "estimate", stats.generated + stats.not_traces
        return {
            "origin": origin,
            "counted": counted,
            "total": total,
            "citation": paper_figures.CITATION,
            "stats": stats.model_dump(mode="json"),
            "rows": [row.model_dump(mode="json") for row in compare_to_paper(stats)],
        }

    def _latency(self, store: sqlite3.Connection) -> dict[str, Any]:
        """Per-call latency percentiles from traces spread evenly over the run (never all of them)."""
        low, high = store.execute("SELECT MIN(seq), MAX(seq) FROM samples").fetchone()
        if low is None:
            return {"sampled": 0, "model_calls": [], "tool_calls": [], "per_sample": {}}
        step = max(1, (high - low + 1) // LATENCY_SAMPLE)
        wanted = list(range(low, high + 1, step))[:LATENCY_SAMPLE]
        model: dict[str, list[float]] = {}
        tools: dict[str, list[float]] = {}
        per_sample: list[float] = []
        sampled = 0
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            for (text,) in store.execute(f"SELECT trace FROM samples WHERE seq IN ({','.join('?' * len(chunk))})", chunk):
                obj = json.loads(text)
                if row_kind(obj) != "trace":
                    continue
                sampled += 1
                per_sample.append(float((obj.get("usage") or {}).get("latency_s") or 0.0))
                calls = [s.get("model_call") for s in obj.get("steps") or []] + [obj.get("final_call")]
                calls += [v.get("model_call") for v in obj.get("verdicts") or []]
                for call in calls:
                    if call and not call.get("cached"):
                        model.setdefault(call.get("purpose", "?"), []).append(float((call.get("usage") or {}).get("latency_s") or 0.0))
                for step in obj.get("steps") or []:
                    for call in step.get("tool_calls") or []:
                        if not call.get("cached"):
                            tools.setdefault(call.get("name", "?"), []).append(float(call.get("latency_s") or 0.0))
                    rag = step.get("rag")
                    if rag and not rag.get("cached"):
                        tools.setdefault("rag", []).append(float(rag.get("latency_s") or 0.0))
        return {
            "sampled": sampled,
            "model_calls": [{"name": k, **_percentiles(v)} for k, v in sorted(model.items())],
            "tool_calls": [{"name": k, **_percentiles(v)} for k, v in sorted(tools.items())],
            "per_sample": _percentiles(per_sample),
        }

    def progress(self) -> dict[str, Any]:
        """How far indexing has got."""
        return {"indexed": self.indexed, "total": self.total, "built": self.built, "path": str(self.path)}


class Indexer(threading.Thread):
    """Keeps a catalog up to date: a first full pass, then a check whenever the run changes."""

    def __init__(self, catalog: Catalog, poll_s: float = 1.0) -> None:
        super().__init__(name="mmat-view-indexer", daemon=True)
        self.catalog = catalog
        self.poll_s = poll_s
        self.stop_event = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        """Index until stopped; an error is kept for the page to show, and retried later."""
        seen = None
        while not self.stop_event.is_set():
            version = self.catalog.dataset.version()
            if version != seen:
                try:
                    self.catalog.refresh(stop=self.stop_event)
                    seen = version
                    self.error = None
                except sqlite3.Error as exc:
                    self.error = f"indexing failed: {exc}"
            self.stop_event.wait(self.poll_s)

    def stop(self) -> None:
        """Stop after the current batch."""
        self.stop_event.set()
        self.join(timeout=10)
