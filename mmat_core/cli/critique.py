"""``mmat critique``: run critics over existing traces without regenerating them.

Typical uses: re-score a finished run with a new quality judge, add answer verification to an
old dataset, or try a stricter cheating judge and see what it would drop::

    mmat critique runs/demo --critics quality --llm openai --model gpt-4o-mini -o rescored.jsonl
    mmat critique traces.jsonl --critics answer_match --set critics[0].threshold=0.8

``FILE`` is a run directory (its ``run.sqlite``), a run store file, or a JSON Lines file with one
Trace per line (``mmat`` writes such files with ``-o``). The input is never modified. The work is
:func:`mmat_core.run.critique`; this module only reads the options and prints the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mmat_core.run.review import CritiqueReport


def report_lines(report: CritiqueReport) -> list[str]:
    """The summary printed by ``mmat critique``."""
    from mmat_core.yields import yield_table

    lines = [f"Critiqued {report.traces} traces" + (f" ({len(report.unreadable)} unreadable rows skipped)" if report.unreadable else "")]
    lines.append(f"  {'critic':<16} {'pass':>6} {'fix':>6} {'reject':>6} {'mean score':>11}")
    for critic, counts in sorted(report.verdicts.items()):
        scores = report.scores.get(critic) or []
        mean = f"{sum(scores) / len(scores):.3f}" if scores else "-"
        lines.append(f"  {critic:<16} {counts['pass']:>6} {counts['fix']:>6} {counts['reject']:>6} {mean:>11}")
    lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items())))
    lines += yield_table(report.tally.result())
    for row in report.unreadable[:5]:
        lines.append(f"  skipped {row.where}: {row.reason}")
    if len(report.unreadable) > 5:
        lines.append(f"  ... and {len(report.unreadable) - 5} more unreadable rows")
    return lines


@click.command()
@click.argument("path", metavar="FILE", type=click.Path(exists=True, path_type=Path))
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML or TOML config (its llm, critics, reflection and engine sections are used).")
@click.option("--critics", help="Comma-separated critics to run (default: the config's, or the run's).")
@click.option("--llm", help="LLM backend for the judges (offline, openai, anthropic, ...).")
@click.option("--model", help="Model name for the LLM backend.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. reflection.on_failure=keep_flagged.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the re-critiqued traces here (JSONL).")
@click.option("--reflect", is_flag=True, help="Splice reflections for 'fix' verdicts (the generator writes corrections); "
              "without it a 'fix' counts as a failure under reflection.on_failure.")
@click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Cache file for judge calls (default: the run directory's cache.sqlite; none for a .jsonl input).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def critique(path: Path, config_file: Path | None, critics: str | None, llm: str | None, model: str | None,
             set_items: tuple[str, ...], out: Path | None, reflect: bool, cache_path: Path | None, as_json: bool) -> None:
    """Run critics over existing traces (a run directory, run.sqlite or traces .jsonl) without regenerating them."""
    from mmat_core.cli.build import collect_overrides
    from mmat_core.run.review import critique as run_critique
    from mmat_core.run.review import critique_config

    overrides = collect_overrides(llm=llm, model=model, critics=critics, set_items=set_items)
    config = critique_config(path, config_file, overrides)
    report = run_critique(path, config, reflect=reflect, out=out, cache_path=cache_path,
                          config_file=str(config_file) if config_file else None)
    if as_json:
        click.echo(json.dumps({
            "traces": report.traces,
            "verdicts": {k: dict(v) for k, v in report.verdicts.items()},
            "mean_score": {k: sum(v) / len(v) for k, v in report.scores.items() if v},
            "status": dict(report.statuses),
            "unreadable": [{"where": u.where, "reason": u.reason} for u in report.unreadable],
            "yield_by_source": {k: v.model_dump(mode="json") for k, v in report.tally.result().items()},
            "out": str(out) if out else None,
        }, indent=2))
        return
    for line in report_lines(report):
        click.echo(line)
    if out is not None:
        click.echo(f"  traces: {out}")
