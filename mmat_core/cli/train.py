"""``mmat train``, ``mmat infer`` and ``mmat eval``: from built data to a tuned model, and back to
answers with tools."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import click

from mmat_core.errors import ConfigError


def _parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = yaml.safe_load(value) if value else ""
    return values


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@click.command()
@click.option("--trainer", default="hf-lora", show_default=True, help="Trainer plugin (hf-lora, swift, ...).")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="rr.jsonl / orr.jsonl, or a run folder holding one of them (repeat to mix files).")
@click.option("--model", required=True, help="Base model: a Hugging Face id or a local folder.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--preset", default="mmat-paper", show_default=True, help="Named settings: mmat-paper (Table 7) or smoke.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. learning_rate=1e-4, max_steps=100, frobenius_lambda=1e-4.")
@click.option("--max-steps", type=int, help="Stop after N optimizer steps.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the output folder.")
@click.option("--resume-from", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Continue from this checkpoint.")
@click.option("--merge", is_flag=True, help="Also save the base model with the adapter merged in.")
def train(trainer: str, data: tuple[Path, ...], model: str, out: Path, preset: str, set_items: tuple[str, ...],
          max_steps: int | None, resume: bool, resume_from: Path | None, merge: bool) -> None:
    """Fine-tune a vision-language model on RR or ORR data (LoRA SFT)."""
    from mmat_core.plugins import get_plugin_manager

    overrides = _parse_set(set_items)
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if merge:
        overrides["merge"] = True
    component = get_plugin_manager().create("trainer", trainer)

    def log(record: dict[str, Any]) -> None:
        click.echo(f"step {record['step']}/{record['total_steps']}  loss {record['loss']:.4f}  "
                   f"lr {record['lr']:.2e}  {record['tokens_per_s']:.0f} tokens/s")

    result = component.train(data=list(data), model=model, output_dir=out, preset=preset,  # type: ignore[attr-defined]
                             overrides=overrides, resume=resume_from or resume, log=log)
    extra = result.model_extra or {}
    if result.command and not extra.get("ran"):
        click.echo("ms-swift is not installed here; run this where it is (also written to "
                   f"{extra.get('script')}):")
        click.echo(shlex.join(result.command))
        for note in extra.get("notes", []):
            click.echo(f"note: {note}", err=True)
        return
    click.echo(f"Trained {result.steps} steps, final loss {result.final_loss}" if result.final_loss is not None
               else f"Finished ({result.steps} steps)")
    for key in ("adapter_dir", "merged_dir", "log_file"):
        if extra.get(key):
            click.echo(f"  {key.replace('_', ' ')}: {extra[key]}")
    if extra.get("rejected"):
        click.echo(f"  {extra['rejected']} record(s) quarantined: {out / 'quarantine.jsonl'}")


def _model_options(func: Any) -> Any:
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


def _runtime(model: str, endpoint: str | None, adapter: str | None, api_key_env: str, mode: str, tools: str,
             extra_operators: str, search: str | None, corpus: Path | None, max_turns: int, max_tokens: int, device: str) -> Any:
    from mmat_core.runtime import AgentRuntime, open_chat_model

    chat = open_chat_model(model, endpoint=endpoint, adapter=adapter, api_key=os.environ.get(api_key_env),
                           max_tokens=max_tokens, device=device)
    search_spec: dict[str, Any] | None = None
    if search:
        search_spec = {"name": search, **({"corpus": str(corpus)} if corpus else {})}
    elif corpus:
        search_spec = {"name": "local", "corpus": str(corpus)}
    return AgentRuntime.from_names(chat, tools=_split(tools), search=search_spec, extra_operators=_split(extra_operators),
                                   mode=mode, max_turns=max_turns)


@click.command()
@_model_options
@click.option("--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Image file (repeatable).")
@click.option("--question", required=True, help="The question about the image.")
@click.option("--constraint", default="", help="Response-style suffix, e.g. 'Answer the question using a single word or phrase.'")
@click.option("--trace", "trace_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the full Trace as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print answer, dialogue and trace as JSON.")
def infer(images: tuple[Path, ...], question: str, constraint: str, trace_out: Path | None, as_json: bool, **model_args: Any) -> None:
    """Answer a question about an image with a tuned model, calling its tools."""
    from mmat_core.writers import write_json_atomic

    runtime = _runtime(**model_args)
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


@click.command(name="eval")
@_model_options
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Benchmark JSONL: question, answers (or answer), image(s), optional constraint/metric/choices.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--limit", type=int, help="Evaluate only the first N questions.")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Questions in flight at once (endpoint models).")
def evaluate(data: Path, out: Path, limit: int | None, concurrency: int, **model_args: Any) -> None:
    """Score a model (plain, RR runtime or ORR) on a QA file with answers."""
    from mmat_core.evaluation import evaluate as run_eval
    from mmat_core.evaluation import summary_table

    runtime = _runtime(**model_args)
    if model_args.get("endpoint") is None:
        concurrency = 1  # a local model answers one question at a time anyway
    result = run_eval(runtime, data, out, limit=limit, concurrency=concurrency)
    click.echo(summary_table(result, runtime.mode, runtime.model.name))
    click.echo(f"\nWritten to {out}: predictions.jsonl, traces.jsonl, summary.json, summary.md")
