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
    from mmat_plugins.agent.chat import ChatModel


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def model_options(func: Any) -> Any:
    """The options that choose a model and how it runs (shared by ``mmat infer`` and ``mmat eval``)."""
    options = [
        click.option("--model", required=True, help="Model name at the endpoint, or a local model / adapter folder."),
        click.option("--endpoint", "--base-url", "endpoint", help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1 "
                     "for vLLM). Without it the model is loaded with transformers."),
        click.option("--backend", type=click.Choice(["auto", "openai", "transformers", "offline"]), default="auto",
                     show_default=True, help="Where the model runs. auto: openai with --endpoint, else transformers; "
                     "offline: a rule-following stand-in that needs no model (tries and tests)."),
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
                 device: str, backend: str = "auto", chat: ChatModel | None = None) -> AgentRuntime:
    """An :class:`AgentRuntime` built from the values of :func:`model_options` (``chat``: use this
    model instead of opening one, e.g. one model shared by the runtimes of several modes)."""
    from mmat_plugins.agent.agent import AgentRuntime
    from mmat_plugins.agent.chat import open_chat_model

    if chat is None:
        chat = open_chat_model(model, endpoint=endpoint, adapter=adapter, api_key=os.environ.get(api_key_env),
                               max_tokens=max_tokens, device=device, backend=backend)
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


def _loopback(host: str) -> bool:
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command(short_help="Serve the agent (RR, ORR or plain) behind an OpenAI-compatible endpoint.")
@model_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Keep the loopback default unless others must reach it: the server has no login.")
@click.option("--port", type=click.IntRange(0, 65535), default=8300, show_default=True, help="Port (0: any free port; "
              "the address is printed).")
@click.option("--served-model-name", help="The model name clients use (default: --model). NAME:rr, NAME:orr and "
              "NAME:plain choose a mode per request.")
@click.option("--concurrency", type=click.IntRange(1), default=4, show_default=True, help="Questions answered at once.")
@click.option("--max-waiting", type=click.IntRange(0), default=64, show_default=True,
              help="Requests that may wait for a free slot; past that a request gets 429.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Append every answer with its full Trace to this JSONL file.")
@click.option("--local-images/--no-local-images", default=None,
              help="Accept image_url values that are local paths or file:// URLs (default: only when bound to loopback).")
@click.option("--allow-remote-images", is_flag=True, help="Fetch http(s) image URLs (public addresses only, size and "
              "time bounded); refused by default.")
@click.option("--allow-host", "allowed_hosts", multiple=True, help="Another Host header name to answer (repeatable), "
              "e.g. the name clients on a cluster use.")
@click.option("--tool-cache-size", type=click.IntRange(0), default=1024, show_default=True,
              help="Tool results kept in memory between requests (keyed by tool, version, options and image "
              "SHA-256), so repeated questions about one image run each tool once; 0: no cache.")
@click.option("--request-max-tokens", type=click.Choice(["each-call", "final-answer", "ignore"]), default="final-answer",
              show_default=True, help="What a request's max_tokens caps: only the call whose reply is the answer (RR "
              "steps keep --max-tokens, so a harness's small max_tokens does not cut them), each model call of the "
              "agent, or nothing.")
def serve(host: str, port: int, served_model_name: str | None, concurrency: int, max_waiting: int, log_path: Path | None,
          local_images: bool | None, allow_remote_images: bool, allowed_hosts: tuple[str, ...], tool_cache_size: int,
          request_max_tokens: str, **model_args: Any) -> None:
    """Serve the agent behind an OpenAI-compatible endpoint: POST /v1/chat/completions, GET /v1/models.

    Each answer comes from the tuned model calling mmat's tools and retrieval (--mode rr), from
    one turn over the tool outputs (orr) or from the model alone (plain); the response's
    mmat_trace field lists the steps. Ctrl-C stops it.
    """
    from mmat_plugins.agent.serve import AgentServer, agent_server
    from mmat_plugins.agent.wire import ImagePolicy

    corpus = model_args["corpus"]
    search: dict[str, Any] | None = None
    if model_args["search"]:
        search = {"name": model_args["search"], **({"corpus": str(corpus)} if corpus else {})}
    elif corpus:
        search = {"name": "local", "corpus": str(corpus)}
    images = ImagePolicy(local_files=_loopback(host) if local_images is None else local_images,
                         remote_urls=allow_remote_images)
    server = agent_server(model_args["model"], mode=model_args["mode"], backend=model_args["backend"],
                          endpoint=model_args["endpoint"], adapter=model_args["adapter"],
                          api_key=os.environ.get(model_args["api_key_env"]), tools=_split(model_args["tools"]),
                          extra_operators=_split(model_args["extra_operators"]), search=search,
                          max_turns=model_args["max_turns"], max_tokens=model_args["max_tokens"],
                          device=model_args["device"], served_model_name=served_model_name, host=host, port=port,
                          concurrency=concurrency, max_waiting=max_waiting, images=images, log_path=log_path,
                          allowed_hosts=allowed_hosts, tool_cache_size=tool_cache_size,
                          request_max_tokens=request_max_tokens)
    backend = model_args["backend"] if model_args["backend"] != "auto" else ("openai" if model_args["endpoint"] else "transformers")

    def ready(running: AgentServer) -> None:
        click.echo(f"mmat serve: listening on {running.base_url} (model '{running.model_name}', mode {running.mode}, "
                   f"backend {backend}; Ctrl-C to stop)")

    try:
        server.serve_forever(ready)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another with --port") from None
