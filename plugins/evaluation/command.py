"""``mmat eval``: score a model (plain, RR runtime or ORR) on a QA file with answers, or run the
paper's benchmark suite through lmms-eval (``--suite paper``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from mmat_plugins.agent.command import model_options, open_runtime

from mmat_core import ConfigError

SUITE_MODES = ("rr", "orr", "plain", "all")


def _key_value(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict; ``null`` is None, numbers stay text for the backend's Options to convert."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = None if value == "null" else value
    return out


def _serve_args(command: click.Command, model_args: dict[str, Any]) -> list[str]:
    """The model options of this command again, as ``mmat serve`` arguments (``--mode`` left out)."""
    args: list[str] = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.name not in model_args or param.name == "mode":
            continue
        value = model_args[param.name]
        if value is None:
            continue
        flag = next(opt for opt in param.opts if opt.startswith("--"))
        args += [flag, str(value)]
    return args


@click.command(name="eval", short_help="Score a model on a QA file, or on the paper's benchmarks through lmms-eval.")
@model_options
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Benchmark JSONL: question, answers (or answer), image(s), optional constraint/metric/choices.")
@click.option("--suite", type=click.Choice(["paper"]), help="Run the paper's eight benchmarks through lmms-eval instead "
              "(with --mode all: plain, RR and ORR) and print the paper's table.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--limit", type=int, help="Evaluate only the first N questions (per benchmark with --suite).")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Questions in flight at once (endpoint models).")
@click.option("--benchmarks", default="mmstar,mmmu,mathvista,mathvision,ai2d,ocrbench,realworldqa,hallusionbench",
              show_default=True, help="--suite: which of the eight to run (comma-separated keys).")
@click.option("--data-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="--suite: read each benchmark from ROOT/<hub id> (a local snapshot or mmat's fixtures) instead of the Hub.")
@click.option("--lmms-python", default=lambda: os.environ.get("MMAT_LMMS_PYTHON", sys.executable),
              show_default="$MMAT_LMMS_PYTHON or this python", help="--suite: the python of an environment with lmms-eval.")
@click.option("--serve-url", help="--suite: use this running `mmat serve` (its /v1 URL) instead of starting one; "
              "--model is then the name it serves.")
@click.option("--judge", help="--suite: mmat LLM backend that answers lmms-eval's judge calls (MathVista, "
              "HallusionBench); default openai with OPENAI_API_KEY.")
@click.option("--judge-option", "judge_options", multiple=True, metavar="KEY=VALUE",
              help="--suite: an option of the judge backend (repeatable), e.g. model=gpt-4o base_url=http://...")
@click.option("--dynvqa", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="--suite: the released DynVQA_en.jsonl (or _zh); adds the Dyn-VQA column (F1-Recall).")
@click.option("--dynvqa-images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="--suite: folder with the Dyn-VQA images under their URL's file name (default: beside the file, images/).")
@click.option("--dynvqa-question", is_flag=True, help="--suite: ask Dyn-VQA's original question, not the golden query.")
@click.option("--lmms-arg", "lmms_args", multiple=True, metavar="ARG",
              help="--suite: an extra lmms-eval argument (repeatable), e.g. --lmms-arg=--gen_kwargs=max_new_tokens=64.")
@click.option("--serve-timeout", type=float, default=300.0, show_default=True,
              help="--suite: seconds `mmat serve` may take to load the model and listen.")
@click.pass_context
def evaluate_command(ctx: click.Context, data: Path | None, suite: str | None, out: Path, limit: int | None,
                     concurrency: int, benchmarks: str, data_root: Path | None, lmms_python: str, serve_url: str | None,
                     judge: str | None, judge_options: tuple[str, ...], dynvqa: Path | None, dynvqa_images: Path | None,
                     dynvqa_question: bool, lmms_args: tuple[str, ...], serve_timeout: float, **model_args: Any) -> None:
    """Score a model (plain, RR runtime or ORR) on a QA file with answers (--data), or run the paper's
    benchmarks and Dyn-VQA through lmms-eval against `mmat serve` (--suite paper)."""
    if (data is None) == (suite is None):
        raise ConfigError("mmat eval: give exactly one of --data FILE (a QA file) or --suite paper (lmms-eval)")
    if suite is not None:
        from mmat_plugins.evaluation.lmms.runner import SuiteOptions, render, run_suite

        mode = model_args["mode"]
        options = SuiteOptions(
            modes=["plain", "rr", "orr"] if mode == "all" else [mode], out=out,
            serve_args=_serve_args(ctx.command, model_args), serve_url=serve_url,
            # A server the user started answers under its --served-model-name, by default its --model.
            served_name=model_args["model"] if serve_url else "mmat-eval",
            benchmarks=[key.strip() for key in benchmarks.split(",") if key.strip()], data_root=data_root, limit=limit,
            lmms_python=lmms_python, concurrency=concurrency, serve_start_timeout_s=serve_timeout, judge=judge,
            judge_options=_key_value(judge_options, "--judge-option"), dynvqa=dynvqa, dynvqa_images=dynvqa_images,
            dynvqa_golden=not dynvqa_question, lmms_args=list(lmms_args), label=Path(model_args["model"]).name or model_args["model"])
        results = run_suite(options)
        click.echo(render(options, results))
        click.echo(f"\nWritten to {out}: table.md, summary.json, and lmms-eval's files per mode under <mode>/lmms/")
        return
    from mmat_plugins.evaluation.scoring import evaluate, summary_table

    assert data is not None
    if model_args["mode"] == "all":
        raise ConfigError("--mode all runs with --suite paper only; with --data choose rr, orr or plain")
    runtime = open_runtime(**model_args)
    if model_args.get("endpoint") is None:
        concurrency = 1  # a local model answers one question at a time anyway
    result = evaluate(runtime, data, out, limit=limit, concurrency=concurrency)
    click.echo(summary_table(result, runtime.mode, runtime.model.name))
    click.echo(f"\nWritten to {out}: predictions.jsonl, traces.jsonl, summary.json, summary.md")


# --mode gains "all" here only (the suite's three modes); the shared model options stay rr|orr|plain.
for _param in evaluate_command.params:
    if _param.name == "mode":
        _param.type = click.Choice(SUITE_MODES)
        _param.help = "rr: multi-turn with tools; orr: tool outputs first, one turn; plain: question only; all (--suite): the three."
