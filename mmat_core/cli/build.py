"""``mmat build``: run the whole pipeline (or a dry run that counts samples)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from mmat_core.errors import ConfigError


def _parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value) if value else ""
    return overrides


def collect_overrides(**flags: Any) -> dict[str, Any]:
    """Turn build flags into dotted config overrides (flags win over the file)."""
    overrides: dict[str, Any] = {}
    if flags.get("source"):
        spec: dict[str, Any] = {"name": flags["source"]}
        if flags.get("source_path"):
            spec["path"] = flags["source_path"]
        overrides["source"] = spec
    if flags.get("llm") or flags.get("model"):
        overrides["llm"] = {k: v for k, v in (("name", flags.get("llm") or "offline"), ("model", flags.get("model"))) if v}
    for key in ("tools", "critics", "formatters"):
        if flags.get(key) is not None:
            overrides[key] = flags[key]
    if flags.get("executor"):
        overrides["executor"] = flags["executor"]
    if flags.get("limit") is not None:
        overrides["curation.limit"] = flags["limit"]
    if flags.get("out"):
        overrides["out"] = str(flags["out"])
    overrides.update(_parse_set(flags.get("set_items") or ()))
    return overrides


@click.command()
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML or TOML config.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (overrides `out:`).")
@click.option("--source", help="Source name (overrides `source:`).")
@click.option("--source-path", help="Local path for the source.")
@click.option("--llm", help="LLM backend name (offline, openai, anthropic, ...).")
@click.option("--model", help="Model name for the LLM backend.")
@click.option("--tools", help="Comma-separated operators to enable ('' for none).")
@click.option("--critics", help="Comma-separated critics.")
@click.option("--formatters", help="Comma-separated formatters (rr, orr, exports).")
@click.option("--executor", help="Executor (local, ray).")
@click.option("--limit", type=int, help="Keep at most N samples after curation.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override any config key, e.g. engine.max_turns=6.")
@click.option("--dry-run", is_flag=True, help="Count what each source yields after curation; no model call.")
def build(config_file: Path | None, out: Path | None, dry_run: bool, **flags: Any) -> None:
    """Build RR/ORR training data. With no config, runs the bundled sample with the offline backend."""
    from mmat_core.config import load_config
    from mmat_core.pipeline import Pipeline

    config = load_config(config_file, collect_overrides(out=out, **flags))
    pipeline = Pipeline.from_config(config, config_file=str(config_file) if config_file else None)
    if dry_run:
        _dry_run(pipeline)
        return
    if not config.out:
        raise ConfigError("no output directory: give --out DIR or `out:` in the config", file=str(config_file) if config_file else None, key="out")
    result = pipeline.run(Path(config.out))
    _summary(result)


def _dry_run(pipeline: Any) -> None:
    from mmat_core.models import Rejected

    kept: Counter[str] = Counter()
    rejected: Counter[tuple[str, str]] = Counter()
    for row in pipeline.iter_samples():
        key = f"{row.source}/{row.subset}" if row.subset else row.source
        if isinstance(row, Rejected):
            rejected[(key, row.reason)] += 1
        else:
            kept[key] += 1
    click.echo("Dry run: samples each source would yield after curation (no model call)")
    for key in sorted(set(kept) | {k for k, _ in rejected}):
        reasons = ", ".join(f"{r} {n}" for (k, r), n in sorted(rejected.items()) if k == key)
        click.echo(f"  {key:<32} {kept[key]:>8} samples" + (f"   rejected: {reasons}" if reasons else ""))
    click.echo(f"  {'total':<32} {sum(kept.values()):>8} samples   {sum(rejected.values())} rejected")


def _summary(result: Any) -> None:
    manifest = result.manifest
    counts = manifest.counts
    click.echo(f"Run written to {result.out_dir}")
    click.echo(f"  samples: {counts.get('finished', 0)} finished, {counts.get('kept', 0)} kept, "
               f"{counts.get('rejected', 0)} rejected at the source, {counts.get('model_calls', 0)} model calls made")
    click.echo(f"  {'source':<28} {'read':>6} {'rej':>5} {'gen':>6} {'pass':>6} {'refl':>5} {'fail-v':>6} {'drop':>5} {'kept':>6} {'$/kept':>8}")
    for key, c in sorted(manifest.yield_by_source.items()):
        per_kept = c.cost_usd / c.kept if c.kept else 0.0
        click.echo(f"  {key:<28} {c.read:>6} {c.rejected:>5} {c.generated:>6} {c.passed:>6} {c.reflected:>5} "
                   f"{c.failed_verification:>6} {c.dropped:>5} {c.kept:>6} {per_kept:>8.4f}")
    for name, path in sorted(result.outputs.items()):
        click.echo(f"  {name}: {path}")
    click.echo(f"  run.json: {result.out_dir / 'run.json'}")
