"""The ``local`` search backend: a local text corpus indexed in SQLite FTS5, ranked by BM25.

The corpus is a JSONL file (``{"title", "text", "url"}`` per line) or a folder of ``.txt``/``.md``
files. Without a ``corpus`` option the bundled sample corpus is used, so the sample build runs
offline end to end.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from pydantic import Field

from mmat_core.components import ComponentOptions, SearchBackend
from mmat_core.errors import ConfigError
from mmat_core.models import SearchHit

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "sources" / "sample_data" / "corpus.jsonl"
_QUERY_WORD = re.compile(r"\w+", re.UNICODE)


def read_corpus(path: Path) -> list[dict[str, Any]]:
    """Documents of a JSONL corpus file or a folder of text/Markdown files."""
    docs: list[dict[str, Any]] = []
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.suffix.lower() in (".txt", ".md") and file.is_file():
                docs.append({"title": file.stem, "text": file.read_text(encoding="utf-8", errors="replace"), "url": None})
    else:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"line {number} is not JSON: {exc.msg}", file=str(path)) from None
                    docs.append({"title": str(row.get("title", "")), "text": str(row.get("text", "")), "url": row.get("url")})
    return docs


class LocalSearchOptions(ComponentOptions):
    """Options of the local corpus backend."""

    corpus: str | None = Field(None, description="JSONL file or folder of .txt/.md; default: the bundled sample corpus")
    snippet_chars: int = Field(300, ge=20)


class LocalCorpusSearch(SearchBackend):
    """BM25 over a local corpus in an in-memory SQLite FTS5 index."""

    name = "local"
    version = "1"
    description = "local text corpus, SQLite FTS5 with BM25 ranking (works offline)"
    Options = LocalSearchOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        path = Path(self.options.corpus) if self.options.corpus else SAMPLE_CORPUS
        if not path.exists():
            raise ConfigError(f"corpus not found: {path}", key="search.corpus")
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _index(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(":memory:", check_same_thread=False)
            db.execute("CREATE VIRTUAL TABLE docs USING fts5(title, text, url UNINDEXED)")
            db.executemany("INSERT INTO docs(title, text, url) VALUES (?, ?, ?)",
                           [(d["title"], d["text"], d["url"]) for d in read_corpus(self.path)])
            self._db = db
        return self._db

    async def search(self, query: str, k: int) -> list[SearchHit]:
        """The ``k`` best documents for ``query`` (terms OR-ed, BM25 order)."""
        words = _QUERY_WORD.findall(query.lower())
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        with self._lock:
            rows = self._index().execute(
                "SELECT title, text, url, bm25(docs) FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?",
                (match, k),
            ).fetchall()
        limit = self.options.snippet_chars
        return [SearchHit(title=t, snippet=text if len(text) <= limit else text[: limit - 3] + "...", url=u, score=-s)
                for t, text, u, s in rows]
