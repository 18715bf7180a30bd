"""``mmat infer``: answer a question about an image with a tuned model, calling its tools; and the
model options ``mmat eval`` shares."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mmat_core.errors import ConfigError

if TYPE_CHECKING:
    from mmat_plugins.agent.agent import AgentRuntime


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def model_options(func: Any) -> Any:
    """The options that choose a model and how it runs (shared by ``mmat infer`` and ``mmat eval``)."""
    options = [
        click.option("--model", required=True, help="Model name at the endpoint, or a local model / adapter folder."),
        click.option("--endpoint", help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1 for vLLM). "
                     "Without it the model is loaded with transformers."),
        click.option("--adapter", help="LoRA adapter folder to load on top of a local model."),
        click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="Environment variable with the endpoint's key."),
        click.option("--mode", type=click.Choice(["rr", "orr", "plain"]), default="rr", show_default=True,
                     help="rr: multi-turn with tools; orr: tool outputs first, one turn; plain: question only."),
        click.option("--tools", default="image_caption,ocr,face_detection", show_default=True, help="Operators to enable (comma-separated)."),
        click.option("--extra-operators", default="", help="Operators the model was not trained with, announced in the question."),
        click.option("--search", help="Search backend for <RAG> (e.g. local); none by default."),
        click.option("--corpus", type=click.Path(exists=True, path_type=Path), help="Corpus for the local search backend."),
        click.option("--max-turns", type=int, default=8, show_default=True, help="Turn cap of the RR loop."),
        click.option("--max-tokens", type=int, default=1024, show_default=True, help="Tokens per reply."),
        click.option("--device", default="auto", show_default=True, help="Device of a local model."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def open_runtime(model: str, endpoint: str | None, adapter: str | None, api_key_env: str, mode: str, tools: str,
                 extra_operators: str, search: str | None, corpus: Path | None, max_turns: int, max_tokens: int,
                 device: str) -> AgentRuntime:
    """An :class:`AgentRuntime` built from the values of :func:`model_options`."""
    from mmat_plugins.agent.agent import AgentRuntime
    from mmat_plugins.agent.chat import open_chat_model

    chat = open_chat_model(model, endpoint=endpoint, adapter=adapter, api_key=os.environ.get(api_key_env),
                           max_tokens=max_tokens, device=device)
    search_spec: dict[str, Any] | None = None
    if search:
        search_spec = {"name": search, **({"corpus": str(corpus)} if corpus else {})}
    elif corpus:
        search_spec = {"name": "local", "corpus": str(corpus)}
    return AgentRuntime.from_names(chat, tools=_split(tools), search=search_spec, extra_operators=_split(extra_operators),
                                   mode=mode, max_turns=max_turns)


@click.command(short_help="Answer a question about an image with a tuned model and its tools.")
@model_options
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Image file (repeatable).")
@click.option("--question", required=True, help="The question about the image.")
@click.option("--constraint", default="", help="Response-style suffix, e.g. 'Answer the question using a single word or phrase.'")
@click.option("--trace", "trace_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the full Trace as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print answer, dialogue and trace as JSON.")
def infer(images: tuple[Path, ...], question: str, constraint: str, trace_out: Path | None, as_json: bool, **model_args: Any) -> None:
    """Answer a question about an image with a tuned model, calling its tools."""
    from mmat_core.writers import write_json_atomic

    runtime = open_runtime(**model_args)
    result = runtime.run(list(images), question, constraint=constraint)
    trace = result.trace.model_dump(mode="json")
    if trace_out:
        write_json_atomic(trace_out, trace)
    if as_json:
        click.echo(json.dumps({"answer": result.answer, "messages": result.messages, "trace": trace}, ensure_ascii=False, indent=2))
        return
    for step in result.trace.steps:
        click.echo(f"[{step.signal}] {step.thought}")
        for call in step.tool_calls:
            click.echo(f"    {call.name}: {call.result}")
        if step.rag is not None:
            click.echo(f"    rag '{step.rag.query}': {step.rag.result}")
    if result.trace.failure:
        raise ConfigError(f"the run failed: {result.trace.failure}")
    click.echo(f"Answer: {result.answer}")
