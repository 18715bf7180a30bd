"""``mmat cache``: what the content-addressed cache holds, and why a sample's calls were reused.

``mmat cache stats -r RUN_DIR`` counts entries and reuse by kind and purpose.
``mmat cache explain SAMPLE_ID -r RUN_DIR`` lists the sample's cached model, tool and retrieval
results with their key documents; an entry that was never reused is compared with the closest
earlier entry of the same purpose, showing what changed its key (prompt version, a message,
parameters, the model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mmat_core.errors import ConfigError


def _open_cache(run_dir: Path | None, cache_file: Path | None) -> Any:
    from mmat_core.engine.cache import Cache

    if cache_file is None:
        if run_dir is None:
            raise ConfigError("give the run directory (-r RUN_DIR) or the cache file (--cache FILE)")
        cache_file = run_dir / "cache.sqlite"
        config = run_dir / "run.json"
        if not cache_file.exists() and config.exists():
            shared = (json.loads(config.read_text(encoding="utf-8")).get("config") or {}).get("engine", {}).get("cache_path")
            if shared:
                cache_file = Path(shared)
    if not cache_file.exists():
        raise ConfigError(f"no cache at {cache_file}; run `mmat build` first or pass --cache FILE")
    return Cache(cache_file)


@click.group()
def cache() -> None:
    """Inspect the cache of model, tool and retrieval results."""


@cache.command()
@click.option("-r", "--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--cache", "cache_file", type=click.Path(dir_okay=False, path_type=Path), help="Cache file (shared caches).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(run_dir: Path | None, cache_file: Path | None, as_json: bool) -> None:
    """Entries and reuse by kind and purpose."""
    store = _open_cache(run_dir, cache_file)
    try:
        data = store.stats()
    finally:
        store.close()
    if run_dir is not None and (run_dir / "run.json").exists():
        counts = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("counts", {})
        data["last_run"] = {"model_calls": counts.get("model_calls", 0), "cached_calls": counts.get("cached_calls", 0)}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Cache {data['path']}: {data['entries']} entries, reused {data['hits']} times")
    click.echo(f"  {'kind':<7} {'purpose':<24} {'entries':>8} {'reused':>8}")
    for row in data["by_purpose"]:
        click.echo(f"  {row['kind']:<7} {row['purpose'] or '-':<24} {row['entries']:>8} {row['hits']:>8}")
    if "last_run" in data:
        last = data["last_run"]
        click.echo(f"  last run: {last['model_calls']} model calls made, {last['cached_calls']} answered from the cache")


@cache.command()
@click.argument("sample_id")
@click.option("-r", "--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--cache", "cache_file", type=click.Path(dir_okay=False, path_type=Path), help="Cache file (shared caches).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (key documents included).")
@click.option("-v", "--verbose", is_flag=True, help="Show each entry's whole key document.")
def explain(sample_id: str, run_dir: Path | None, cache_file: Path | None, as_json: bool, verbose: bool) -> None:
    """Why SAMPLE_ID's calls were (or were not) answered from the cache."""
    store = _open_cache(run_dir, cache_file)
    try:
        entries = store.explain(sample_id)
    finally:
        store.close()
    if not entries:
        raise ConfigError(f"the cache holds nothing for sample {sample_id!r}; check the id (`mmat status` lists samples)")
    if as_json:
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    click.echo(f"Sample {sample_id}: {len(entries)} cached results")
    for entry in entries:
        doc = entry["key_document"]
        what = entry["purpose"] or entry["kind"]
        source = " ".join(str(doc.get(k)) for k in ("backend", "model", "tool", "version") if doc.get(k))
        reuse = f"reused {entry['hits']}x" if entry["reused"] else "made once, not reused yet"
        click.echo(f"  {entry['key'][:16]}  {entry['kind']:<5} {what:<22} {source:<32} {reuse}")
        if doc.get("prompt_version"):
            click.echo(f"      prompt version {doc['prompt_version']}, params {json.dumps(doc.get('params'))}")
        for change in entry.get("changed", []):
            click.echo(f"      differs from an earlier entry: {change}")
        if verbose:
            click.echo("      key document: " + json.dumps(doc, ensure_ascii=False)[:2000])
