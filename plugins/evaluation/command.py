"""``mmat eval``: score a model (plain, RR runtime or ORR) on a QA file with answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from mmat_plugins.agent.command import model_options, open_runtime


@click.command(name="eval", short_help="Score a model (plain, RR runtime or ORR) on a QA file with answers.")
@model_options
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Benchmark JSONL: question, answers (or answer), image(s), optional constraint/metric/choices.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--limit", type=int, help="Evaluate only the first N questions.")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Questions in flight at once (endpoint models).")
def evaluate_command(data: Path, out: Path, limit: int | None, concurrency: int, **model_args: Any) -> None:
    """Score a model (plain, RR runtime or ORR) on a QA file with answers."""
    from mmat_plugins.evaluation.scoring import evaluate, summary_table

    runtime = open_runtime(**model_args)
    if model_args.get("endpoint") is None:
        concurrency = 1  # a local model answers one question at a time anyway
    result = evaluate(runtime, data, out, limit=limit, concurrency=concurrency)
    click.echo(summary_table(result, runtime.mode, runtime.model.name))
    click.echo(f"\nWritten to {out}: predictions.jsonl, traces.jsonl, summary.json, summary.md")
