"""A content-addressed cache of model and tool results, in SQLite.

The key of a model call is the SHA-256 of a canonical JSON document holding the backend, model,
full messages (images by content hash, never by path), generation parameters, response schema and
prompt-template version. The document itself is stored beside the answer, so ``mmat cache
explain`` can show exactly what a key was made of. API keys never enter it.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from mmat_core.components import LLMRequest
from mmat_core.secrets import scrub

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


class _Unsupported(Exception):
    pass


_NAN, _INF, _NEG_INF = orjson.Fragment(b"NaN"), orjson.Fragment(b"Infinity"), orjson.Fragment(b"-Infinity")


def _float_text(value: float) -> Any:
    """``value`` itself where orjson writes it as :func:`json.dumps` does, else that text.

    They agree on finite floats from 1e-4 up and on zero (the shortest round-trip digits, in the
    same notation); smaller ones differ (``1e-05`` vs ``0.00001``), and json spells NaN and the
    infinities its own way.
    """
    if value == 0.0 or 1e-4 <= abs(value) < math.inf:
        return value
    if math.isnan(value):
        return _NAN
    if value in (math.inf, -math.inf):
        return _INF if value > 0 else _NEG_INF
    return orjson.Fragment(float.__repr__(value).encode())


def _for_orjson(obj: Any) -> Any:
    """``obj`` ready for orjson to write exactly what json writes: the object itself when nothing
    needs changing (the usual case), else a copy with the floats above as raw JSON fragments.

    Only plain containers of strings, integers, booleans, None and floats are taken; anything
    else (dataclasses, dates, UUIDs, which orjson writes and json refuses; subclasses) raises
    :class:`_Unsupported` so the standard library handles it as before. Integers beyond 64 bits,
    non-string keys and very deep nesting make orjson raise TypeError, with the same fallback.
    """
    kind = type(obj)
    if kind is dict or kind is list or kind is tuple:
        changed: Any = None
        for key, value in (obj.items() if kind is dict else enumerate(obj)):
            vkind = type(value)
            if vkind is str or vkind is int or vkind is bool or value is None:
                continue
            new = _for_orjson(value)
            if new is not value:
                if changed is None:
                    changed = dict(obj) if kind is dict else list(obj)
                changed[key] = new
        return obj if changed is None else changed
    if kind is float:
        return _float_text(obj)
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    raise _Unsupported(kind.__name__)


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _orjson_canonical(obj: Any) -> bytes | None:
    """The canonical bytes from orjson, or None where only the standard library writes them."""
    try:
        return orjson.dumps(_for_orjson(obj), option=orjson.OPT_SORT_KEYS)
    except (TypeError, _Unsupported, RecursionError):
        return None


def canonical_bytes(obj: Any) -> bytes:
    """:func:`canonical` as UTF-8 bytes: through orjson (ten times faster) wherever its output is
    byte-identical to the standard library's, so cache keys never depend on which one ran."""
    fast = _orjson_canonical(obj)
    return fast if fast is not None else _json_dumps(obj).encode()


def canonical(obj: Any) -> str:
    """Canonical JSON: sorted keys, no spaces; the same object always gives the same text."""
    fast = _orjson_canonical(obj)
    return fast.decode() if fast is not None else _json_dumps(obj)


#: System prompt text -> its key document form (see :func:`system_digest`); bounded.
_SYSTEM_DIGESTS: dict[str, str] = {}


def system_digest(text: str) -> str:
    """How a system prompt appears in a model key document: ``sha256:`` and the hash of its
    UTF-8 text. A run's system prompts are long (a kilobyte and more) and repeated in every call of
    a sample; the hash identifies the text just as well and keeps the stored documents small.
    ``mmat cache explain`` still reports a changed system prompt (as a changed message text)."""
    digest = _SYSTEM_DIGESTS.get(text)
    if digest is None:
        if len(_SYSTEM_DIGESTS) >= 4096:
            _SYSTEM_DIGESTS.clear()
        digest = _SYSTEM_DIGESTS[text] = "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return digest


def model_key_document(backend: str, model: str, request: LLMRequest) -> dict[str, Any]:
    """Everything that determines a model's answer, images reduced to their hashes and system
    prompts to theirs (:func:`system_digest`)."""
    messages = []
    for message in request.messages:
        if isinstance(message.content, str):
            content: Any = system_digest(message.content) if message.role == "system" else message.content
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


def _plain_messages(messages: list[dict[str, Any]]) -> bool:
    """Whether a key document's messages hold only strings and None (as built from validated
    requests), so orjson writes them exactly as json does without :func:`_for_orjson`'s walk."""
    for message in messages:
        if type(message["role"]) is not str:
            return False
        content = message["content"]
        if type(content) is not str:
            for part in content:
                for value in part.values():
                    if value is not None and type(value) is not str:
                        return False
    return True


#: id of a response schema -> (the schema, a snapshot of it, its canonical text as a fragment).
_SCHEMA_FRAGMENTS: dict[int, tuple[Any, Any, Any]] = {}


def _schema_fragment(schema: Any) -> Any:
    """A request's response schema as canonical JSON ready for orjson to embed. Schemas are
    module constants sent with every step of every sample: their text is computed once, and
    reused while the very same object still equals the snapshot taken then (a comparison in C,
    far cheaper than walking the schema again). Anything else is prepared by :func:`_for_orjson`."""
    if type(schema) is not dict:
        return _for_orjson(schema)
    entry = _SCHEMA_FRAGMENTS.get(id(schema))
    if entry is not None and entry[0] is schema and entry[1] == schema:
        return entry[2]
    data = _orjson_canonical(schema)
    if data is None:
        return _for_orjson(schema)  # raises, or orjson will: the caller falls back to json
    if len(_SCHEMA_FRAGMENTS) >= 64:
        _SCHEMA_FRAGMENTS.clear()
    fragment = orjson.Fragment(data)
    _SCHEMA_FRAGMENTS[id(schema)] = (schema, copy.deepcopy(schema), fragment)
    return fragment


def model_keyed(backend: str, model: str, request: LLMRequest) -> tuple[str, str]:
    """:func:`keyed` of :func:`model_key_document`, the same key and text, faster: the messages
    (nearly all of the document) are checked flatly instead of walked and copied."""
    document = model_key_document(backend, model, request)
    data: bytes | None = None
    if _plain_messages(document["messages"]):
        rest = dict(document)
        messages = rest.pop("messages")
        schema = rest.pop("response_schema")
        try:
            prepared = _for_orjson(rest)  # ``rest`` or a copy of it: ours to add the messages to
            prepared["messages"] = messages
            prepared["response_schema"] = _schema_fragment(schema)
            data = orjson.dumps(prepared, option=orjson.OPT_SORT_KEYS)
        except (TypeError, _Unsupported, RecursionError):
            data = None
    if data is None:
        data = canonical_bytes(document)
    return hashlib.sha256(data).hexdigest(), data.decode()


def key_of(document: dict[str, Any]) -> str:
    """The cache key of a key document."""
    return hashlib.sha256(canonical_bytes(document)).hexdigest()


def keyed(document: dict[str, Any]) -> tuple[str, str]:
    """The cache key of a key document and the document's canonical text (what :meth:`Cache.put`
    stores beside the answer), encoding it once."""
    data = canonical_bytes(document)
    return hashlib.sha256(data).hexdigest(), data.decode()


#: Bits of the Bloom filter of a fresh cache's keys (8 MB): about 1.5% false positives (each just
#: an SQLite lookup) at six million entries, the calls of a million samples.
_BLOOM_BITS = 1 << 26


def _bloom_bits(key: str) -> tuple[int, int, int]:
    mask = _BLOOM_BITS - 1
    try:  # keys are SHA-256 hex digests: their digits are already uniform
        return int(key[0:12], 16) & mask, int(key[12:24], 16) & mask, int(key[24:36], 16) & mask
    except ValueError:
        digest = hashlib.blake2b(key.encode(), digest_size=24).digest()
        return (int.from_bytes(digest[0:8], "big") & mask, int.from_bytes(digest[8:16], "big") & mask,
                int.from_bytes(digest[16:24], "big") & mask)


def _bloom_add(bits: bytearray, key: str) -> None:
    one, two, three = _bloom_bits(key)
    bits[one >> 3] |= 1 << (one & 7)
    bits[two >> 3] |= 1 << (two & 7)
    bits[three >> 3] |= 1 << (three & 7)


def _bloom_has(bits: bytearray, key: str) -> bool:
    # Unrolled: called for every model and tool call of a run.
    one, two, three = _bloom_bits(key)
    return bool(bits[one >> 3] & (1 << (one & 7)) and bits[two >> 3] & (1 << (two & 7))
                and bits[three >> 3] & (1 << (three & 7)))


#: How often a batching cache's writer thread checkpoints the WAL.
CHECKPOINT_EVERY_S = 1.0

#: WAL size past which the writer thread also restarts the log. A passive checkpoint copies the
#: log into the database but the log only starts again from its beginning when the copy finished
#: with no commit in between: in a million-sample run it grew without bound (8 GB after four
#: minutes; the cache's keys are random, so each entry rewrites a page of the key index).
WAL_RESET_BYTES = 128 << 20

_ENTRY_COLUMNS = ("key", "kind", "purpose", "sample_id", "key_doc", "value", "created", "last_used")
_INSERT = (f"INSERT OR REPLACE INTO entries({', '.join(_ENTRY_COLUMNS)}) "
           f"VALUES ({','.join('?' * len(_ENTRY_COLUMNS))})")
# The same insert for a whole batch in one statement, the rows given as one JSON array of arrays:
# SQLite then does all of a batch's work inside one call that lets go of the GIL (executemany takes
# the GIL back between rows, and each time waits for the busy event loop to hand it over).
_INSERT_JSON = (f"INSERT OR REPLACE INTO entries({', '.join(_ENTRY_COLUMNS)}) SELECT "
                + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_ENTRY_COLUMNS)))
                + " FROM json_each(?)")
_HITS = "UPDATE entries SET hits=hits+?, last_used=? WHERE key=?"
_HITS_JSON = ("UPDATE entries SET hits = hits + json_extract(j.value, '$[0]'), last_used = json_extract(j.value, '$[1]') "
              "FROM json_each(?) AS j WHERE entries.key = json_extract(j.value, '$[2]')")


def _as_json_rows(rows: list[tuple[Any, ...]]) -> bytes | None:
    """``rows`` as one JSON array for the ``*_JSON`` statements, or None when a value would not
    come back from SQLite's JSON functions unchanged (a NUL character, an unpaired surrogate)."""
    try:
        data = orjson.dumps(rows)
    except TypeError:
        return None
    return None if b"\\u0000" in data else data


class Cache:
    """SQLite-backed result cache, shared by every call of a run (or several runs).

    By default every :meth:`put` commits at once. A run opens it with ``commit_after_s`` set: puts
    (and hit counts) then gather in memory and are committed as one batch when ``commit_after_s``
    has passed since the first of them, when ``commit_every`` have gathered, on :meth:`commit`,
    :meth:`flush` and :meth:`close`. One commit per call was a sixth of a run's time.

    Batches are committed, in order, by the cache's own writer thread on its own connection, which
    also checkpoints the WAL: SQLite lets go of the GIL while it works, so inserting into the key
    index (the cost that grows with the cache: tens of microseconds an entry at a million samples)
    runs beside the event loop instead of inside it. Entries on their way to disk are answered from
    memory. The run awaits :meth:`commit` before it commits any trace, so a crash never loses a
    call a stored sample relies on; it can lose at most the last ``commit_after_s`` of other
    calls (made again on resume). A failed write (a full disk) is raised by the next call.

    A batching cache that starts empty also keeps a Bloom filter of the keys it puts: a lookup of
    a key it never put is answered "absent" without asking SQLite (most lookups of a new run are
    such misses). When another connection (a second process sharing the file) has committed,
    which the writer connection's ``data_version`` shows at the next commit, the filter is dropped
    and every lookup goes to SQLite again.
    """

    def __init__(self, path: Path, *, commit_after_s: float = 0.0, commit_every: int = 1000) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
        if "last_used" not in columns:  # caches written before the column existed
            self._db.execute("ALTER TABLE entries ADD COLUMN last_used REAL")
        self.hits = 0
        self.misses = 0
        self.commit_after_s = commit_after_s
        self.commit_every = max(1, commit_every)
        #: key -> row of entries put but not handed to the writer yet (read back by :meth:`get`).
        self._pending: dict[str, tuple[Any, ...]] = {}
        #: key -> row of entries the writer thread is committing (read back by :meth:`get`).
        self._writing: dict[str, tuple[Any, ...]] = {}
        #: key -> [hits, last used] not committed yet.
        self._pending_hits: dict[str, list[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._writer: threading.Thread | None = None
        self._queue: queue.SimpleQueue[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], Future[None]] | None] = (
            queue.SimpleQueue())
        self._write_error: BaseException | None = None
        #: Bloom filter of the keys this cache holds, while it knows them all (see the class doc).
        self._known: bytearray | None = None
        if commit_after_s > 0:
            # A run's cache grows to millions of entries under random keys: a larger page cache
            # (64 MB, from the default 2 MB) keeps the key index's upper levels in memory.
            self._db.execute("PRAGMA cache_size=-65536")
            self._wdb = self._writer_connection()
            self._json_rows = self._supports_json_rows()
            if self._db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None:
                self._known = bytearray(_BLOOM_BITS // 8)
                # Changes only when another connection commits (the writer's own commits do not count).
                self._version = self._wdb.execute("PRAGMA data_version").fetchone()[0]
            self._writer = threading.Thread(target=self._write_loop, name="mmat-cache-writer", daemon=True)
            self._writer.start()

    # -- the writer thread ------------------------------------------------------------------

    def _writer_connection(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA cache_size=-65536")
        # Commits never checkpoint (that syncs the file): the writer thread does it between batches.
        db.execute("PRAGMA wal_autocheckpoint=0")
        # When the log starts again from its beginning, the file is cut back to this.
        db.execute(f"PRAGMA journal_size_limit={WAL_RESET_BYTES}")
        return db

    def _supports_json_rows(self) -> bool:
        """Whether this SQLite has the JSON functions and UPDATE ... FROM (3.33+) the batch
        statements use; older ones fall back to executemany."""
        try:
            self._wdb.execute("CREATE TEMP TABLE probe(key TEXT, hits INTEGER, last_used REAL)")
            self._wdb.execute("UPDATE probe SET hits = hits + json_extract(j.value, '$[0]') "
                              "FROM json_each('[[1, 0, \"k\"]]') AS j WHERE probe.key = json_extract(j.value, '$[2]')")
            self._wdb.execute("DROP TABLE probe")
        except sqlite3.Error:
            return False
        return True

    def _write_loop(self) -> None:
        """Commit handed-over batches in order and checkpoint the WAL about every second, until
        :meth:`close` sends the end."""
        last_checkpoint = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=CHECKPOINT_EVERY_S)
                except queue.Empty:
                    item = ()  # nothing to commit this second: only checkpoint
                if item is None:
                    break
                if item:
                    rows, hits, done = item
                    try:
                        self._commit(rows, hits)
                    except BaseException as exc:  # handed to whoever waits, and raised by the next call
                        if not done.done():
                            done.set_exception(exc)
                    else:
                        if not done.done():
                            done.set_result(None)
                if time.monotonic() - last_checkpoint >= CHECKPOINT_EVERY_S:
                    self._checkpoint()
                    last_checkpoint = time.monotonic()
        finally:
            self._wdb.close()  # the last connection to close checkpoints what is left

    def _commit(self, rows: list[tuple[Any, ...]], hits: list[tuple[Any, ...]], db: sqlite3.Connection | None = None) -> None:
        """One transaction with a batch of entries and hit counts (in the writer thread, or on
        ``db`` when there is none)."""
        if not rows and not hits:
            return
        if db is None:
            db = self._wdb
        if self._known is not None and db.execute("PRAGMA data_version").fetchone()[0] != self._version:
            self._known = None  # another process writes here too: look every key up from now on
        json_rows = self._writer is not None and self._json_rows
        with db:
            db.execute("BEGIN")
            for batch, one_statement, per_row in ((rows, _INSERT_JSON, _INSERT), (hits, _HITS_JSON, _HITS)):
                if not batch:
                    continue
                data = _as_json_rows(batch) if json_rows else None
                if data is not None:
                    db.execute(one_statement, (data,))
                else:
                    db.executemany(per_row, batch)

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint, and a RESTART once the log is larger than :data:`WAL_RESET_BYTES`
        (the next commit then writes the log from its start). Not TRUNCATE: that counts as
        another connection's change in ``PRAGMA data_version`` and would drop the Bloom filter."""
        try:
            self._wdb.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > WAL_RESET_BYTES:
                self._wdb.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except (sqlite3.Error, OSError):
            pass  # busy now (another process): the next round, or closing the cache, checkpoints

    # -- reading and writing ----------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        """The stored value for ``key``, or None."""
        commit_now = False
        with self._lock:
            pending = self._pending.get(key) or self._writing.get(key)
            if pending is not None:
                value = pending[5]
            elif self._known is not None and not _bloom_has(self._known, key):
                self.misses += 1
                return None
            else:
                row = self._db.execute("SELECT value FROM entries WHERE key=?", (key,)).fetchone()
                if row is None:
                    self.misses += 1
                    return None
                value = row[0]
            self.hits += 1
            if self.commit_after_s > 0:
                counted = self._pending_hits.setdefault(key, [0, 0.0])
                counted[0] += 1
                counted[1] = time.time()
                commit_now = not self._arm_timer()
            else:
                self._db.execute("UPDATE entries SET hits=hits+1, last_used=? WHERE key=?", (time.time(), key))
        if commit_now:
            self.flush()
        return json.loads(value)

    def put(self, key: str, value: Any, *, kind: str, document: dict[str, Any] | str, purpose: str = "",
            sample_id: str | None = None) -> None:
        """Store a result (``document`` as a dict, or its canonical text from :func:`keyed`).
        Committed at once, or with the next batch when the cache gathers writes."""
        now = time.time()
        # Stored text never holds a credential (a reply or request echoing a key): mmat_core/secrets.py.
        row = (key, kind, purpose, sample_id, scrub(document if isinstance(document, str) else canonical(document)),
               scrub(canonical(value)), now, now)
        with self._lock:
            if self.commit_after_s <= 0:
                self._db.execute(_INSERT, row)
                return
            self._raise_write_error()
            self._pending[key] = row
            if self._known is not None:
                _bloom_add(self._known, key)
            self._pending_hits.pop(key, None)  # a replaced entry starts again at no hits
            commit_now = not self._arm_timer()
            if not commit_now and len(self._pending) >= self.commit_every:
                self._hand_over()
        if commit_now:  # no event loop to wait on (a script, a worker thread): commit now
            self.flush()  # outside the lock: the writer thread takes it when the batch is done

    def _arm_timer(self) -> bool:
        """Make sure gathered writes are handed over within ``commit_after_s``; False when there
        is no event loop here to wait on (a worker thread, a script): the caller commits now."""
        if self._timer is not None:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._timer = loop.call_later(self.commit_after_s, self._hand_over)
        return True

    @property
    def pending(self) -> int:
        """Entries put but not committed yet."""
        return len(self._pending) + len(self._writing)

    def _raise_write_error(self) -> None:
        if self._write_error is not None:
            raise self._write_error

    def _hand_over(self) -> Future[None]:
        """Give the gathered entries and hit counts to the writer thread as one batch; the future
        is done once they are committed (at once when nothing was gathered and nothing is on its
        way: otherwise it follows every batch handed over before it)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            rows = self._pending
            hits = [(n, last, key) for key, (n, last) in self._pending_hits.items()]
            self._pending = {}
            self._pending_hits = {}
            self._writing.update(rows)
            done: Future[None] = Future()
            if self._writer is None:  # no writer thread (closed, or not batching): commit here
                self._commit(list(rows.values()), hits, self._db)
                self._writing.clear()
                done.set_result(None)
                return done
            done.add_done_callback(lambda future: self._written(rows, future))
            self._queue.put((list(rows.values()), hits, done))
            return done

    def _written(self, rows: dict[str, tuple[Any, ...]], future: Future[None]) -> None:
        """A batch is committed (or failed): its entries are now read from SQLite."""
        if future.cancelled():
            return  # nobody cancels these (see commit); its entries simply stay readable from memory
        with self._lock:
            if future.exception() is not None:
                self._write_error = future.exception()
                return  # kept in memory: this process still answers them; the run stops
            for key, row in rows.items():
                if self._writing.get(key) is row:
                    del self._writing[key]

    async def commit(self) -> None:
        """Commit every entry put so far; the event loop goes on while the writer thread works.
        Raises the error of a failed write."""
        self._raise_write_error()
        if self._writer is None:
            self.flush()
            return
        # Shielded: a cancelled caller must not cancel the batch, which the writer commits anyway.
        await asyncio.shield(asyncio.wrap_future(self._hand_over()))
        self._raise_write_error()

    def flush(self) -> None:
        """Commit every entry and hit count gathered so far, and wait until it is on disk. Never
        call it holding ``_lock``: the writer thread takes the lock when a batch is done."""
        self._raise_write_error()
        done = self._hand_over()
        while True:
            try:
                done.result(timeout=1.0)
                break
            except TimeoutError:
                writer = self._writer
                if writer is not None and not writer.is_alive():
                    raise RuntimeError(f"{self.path}: the cache's writer thread stopped; entries were not saved") from None
        self._raise_write_error()

    def stats(self) -> dict[str, Any]:
        """Entry counts by kind and purpose, and total hits recorded."""
        self.flush()
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
        self.flush()
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
        """Commit what was gathered, stop the writer thread and close the database (the last
        connection to close checkpoints what is left)."""
        try:
            if self._write_error is None:
                self.flush()
        finally:
            if self._writer is not None:
                self._queue.put(None)
                self._writer.join()
                self._writer = None
            with self._lock:
                self._db.close()
