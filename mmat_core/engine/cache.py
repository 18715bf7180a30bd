"""A content-addressed cache of model and tool results, in SQLite.

The key of a model call is the SHA-256 of a canonical JSON document holding the backend, model,
full messages (images by content hash, never by path), generation parameters, response schema and
prompt-template version. The document itself is stored beside the answer, so ``mmat cache
explain`` can show exactly what a key was made of. API keys never enter it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from mmat_core.components import LLMRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    purpose TEXT,
    sample_id TEXT,
    key_doc TEXT,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_used REAL
);
CREATE INDEX IF NOT EXISTS entries_sample ON entries(sample_id);
"""


def canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no spaces; the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def model_key_document(backend: str, model: str, request: LLMRequest) -> dict[str, Any]:
    """Everything that determines a model's answer, images reduced to their hashes."""
    messages = []
    for message in request.messages:
        if isinstance(message.content, str):
            content: Any = message.content
        else:
            content = [
                {"image": part.image.sha256} if part.type == "image" and part.image else {"text": part.text}
                for part in message.content
            ]
        messages.append({"role": message.role, "content": content})
    return {
        "kind": "model",
        "backend": backend,
        "model": model,
        "messages": messages,
        "params": {"temperature": request.temperature, "max_tokens": request.max_tokens},
        "response_schema": request.response_schema,
        "prompt_version": request.prompt_version,
    }


def tool_key_document(tool: str, version: str, image_sha256: str | None, args: dict[str, Any], extra: Any = None) -> dict[str, Any]:
    """The key document of a tool result: (tool, version, image hash, arguments)."""
    return {"kind": "tool", "tool": tool, "version": version, "image": image_sha256, "args": args, "extra": extra}


def _brief(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else canonical(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def diff_documents(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two key documents (what changed a cache key)."""
    changes: list[str] = []
    for field in sorted(set(old) | set(new)):
        before, after = old.get(field), new.get(field)
        if before == after:
            continue
        if field == "messages" and isinstance(before, list) and isinstance(after, list):
            if len(before) != len(after):
                changes.append(f"messages: {len(before)} -> {len(after)} messages")
            for i, (a, b) in enumerate(zip(before, after)):
                if a != b:
                    what = "an image" if _images(a) != _images(b) else "its text"
                    changes.append(f"messages[{i}] ({b.get('role')}): {what} changed")
                    break
        elif isinstance(before, dict) and isinstance(after, dict):
            for sub in sorted(set(before) | set(after)):
                if before.get(sub) != after.get(sub):
                    changes.append(f"{field}.{sub}: {_brief(before.get(sub))} -> {_brief(after.get(sub))}")
        else:
            changes.append(f"{field}: {_brief(before)} -> {_brief(after)}")
    return changes


def _images(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    return [part["image"] for part in content if isinstance(part, dict) and "image" in part] if isinstance(content, list) else []


def key_of(document: dict[str, Any]) -> str:
    """The cache key of a key document."""
    return hashlib.sha256(canonical(document).encode()).hexdigest()


class Cache:
    """SQLite-backed result cache, shared by every call of a run (or several runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
        if "last_used" not in columns:  # caches written before the column existed
            self._db.execute("ALTER TABLE entries ADD COLUMN last_used REAL")
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        """The stored value for ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM entries WHERE key=?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            self._db.execute("UPDATE entries SET hits=hits+1, last_used=? WHERE key=?", (time.time(), key))
        return json.loads(row[0])

    def put(self, key: str, value: Any, *, kind: str, document: dict[str, Any], purpose: str = "", sample_id: str | None = None) -> None:
        """Store a result. Committed at once: a finished call is never lost to a crash."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO entries(key, kind, purpose, sample_id, key_doc, value, created, last_used) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (key, kind, purpose, sample_id, canonical(document), canonical(value), now, now),
            )

    def stats(self) -> dict[str, Any]:
        """Entry counts by kind and purpose, and total hits recorded."""
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, COALESCE(purpose,''), COUNT(*), SUM(hits) FROM entries GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
        return {
            "path": str(self.path),
            "entries": sum(r[2] for r in rows),
            "hits": sum(r[3] or 0 for r in rows),
            "by_purpose": [{"kind": r[0], "purpose": r[1], "entries": r[2], "hits": r[3] or 0} for r in rows],
        }

    def entries_for_sample(self, sample_id: str) -> list[dict[str, Any]]:
        """Every entry recorded for one sample, with its key document."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, kind, purpose, key_doc, hits, created FROM entries WHERE sample_id=? ORDER BY created",
                (sample_id,),
            ).fetchall()
        return [
            {"key": r[0], "kind": r[1], "purpose": r[2], "key_document": json.loads(r[3] or "{}"), "hits": r[4], "created": r[5]}
            for r in rows
        ]

    def explain(self, sample_id: str) -> list[dict[str, Any]]:
        """Every entry of one sample with why it was (or was not) reused.

        An entry with hits was answered from the cache that many times. For an entry that was
        never reused, the closest earlier entry of the same sample and purpose is compared with it
        and the differences of their key documents are listed: that is what made the key change
        (a new prompt version, an edited message, other parameters).
        """
        entries = self.entries_for_sample(sample_id)
        for index, entry in enumerate(entries):
            entry["reused"] = entry["hits"] > 0
            # Compare like with like: the same purpose at the same point of the dialogue (a later
            # turn of one rationale is a different question, not a changed one).
            turn = len(entry["key_document"].get("messages") or [])
            earlier = [e for e in entries[:index] if e["kind"] == entry["kind"] and e["purpose"] == entry["purpose"]
                       and len(e["key_document"].get("messages") or []) == turn]
            if not earlier:
                entry["changed"] = []
                continue
            diffs = [diff_documents(e["key_document"], entry["key_document"]) for e in earlier]
            entry["changed"] = min(diffs, key=len)
        return entries

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
