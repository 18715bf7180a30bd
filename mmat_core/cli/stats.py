"""``mmat stats RUN``: a build's figures, optionally beside the MMAT-1M paper's."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path), metavar="RUN_DIR")
@click.option("--compare", type=click.Choice(["paper"]), help="Put each figure beside the paper's published one.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures (and the comparison) as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.png",
              help="Also draw the figures as a PNG (needs matplotlib: pip install 'mmat[plot]').")
@click.option("--write/--no-write", default=True, show_default=True,
              help="Store the figures in RUN_DIR/run.json (section `stats`).")
def stats(run_dir: Path, compare: str | None, as_json: bool, plot_path: Path | None, write: bool) -> None:
    """Count RUN_DIR's figures from its stored traces: samples per source and sub-dataset,
    operator and RAG calls, reflections by critic, rationale steps and quality scores (histograms),
    tokens and cost per kept sample. With `--compare paper` each figure is shown beside the
    paper's as a share, and `<<` marks where the build departs from it."""
    from mmat_core.stats import comparison_lines, compare_to_paper, plot_stats, run_stats, stats_lines, write_stats

    figures = run_stats(run_dir)
    rows = compare_to_paper(figures) if compare else None
    written = write_stats(run_dir, figures) if write else None
    if plot_path is not None:
        plot_stats(figures, plot_path, rows=rows)
    if as_json:
        document: dict[str, object] = {"run_dir": str(run_dir), "stats": figures.model_dump(mode="json")}
        if rows is not None:
            document["comparison"] = [row.model_dump(mode="json") for row in rows]
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        click.echo(f"Run {run_dir}")
        for line in comparison_lines(rows) if rows is not None else stats_lines(figures):
            click.echo(line)
    if write and written is None and not (run_dir / "run.json").is_file():
        click.echo(f"{run_dir}/run.json does not exist yet (the build has not finished): figures not stored", err=True)
    if plot_path is not None:
        click.echo(f"plot: {plot_path}", err=True)
