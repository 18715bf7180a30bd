"""``mmat build``: run the whole pipeline (or a dry run that counts samples)."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import click

from mmat_core.errors import ConfigError


@contextmanager
def plain_warnings() -> Iterator[None]:
    """While a command runs, mmat's own warnings (a category from ``mmat_core`` or a built-in
    plugin, e.g. :class:`~mmat_core.engine.settings.ConcurrencyWarning`) print as one scrubbed
    ``Warning: ...`` line on stderr, without Python's ``file:line`` prefix and source line: they
    are written for the user, not the developer. They stay real warnings (``-W error`` and the
    warning filters apply: ``-W ignore::UserWarning`` hides them); other libraries' warnings print
    as Python prints them. Only printing changes, and only in the command: a Python user of
    :class:`~mmat_core.pipeline.Pipeline` gets the warning as usual."""
    with warnings.catch_warnings():
        python_prints = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            if not category.__module__.startswith(("mmat_core", "mmat_plugins")):
                python_prints(message, category, filename, lineno, file, line)
                return
            from mmat_core.secrets import scrub

            click.echo(f"Warning: {scrub(str(message))}", err=True)

        warnings.showwarning = show
        yield


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
            # A list, so --set can then reach one item's options (--set tools.1.detector.model=PATH).
            overrides[key] = [part.strip() for part in flags[key].split(",") if part.strip()]
    if flags.get("executor"):
        overrides["executor"] = flags["executor"]
    if flags.get("ray_address"):
        if flags.get("executor") not in (None, "ray"):
            raise ConfigError(f"--ray-address needs --executor ray, not --executor {flags['executor']}")
        overrides["executor"] = {"name": "ray", "address": flags["ray_address"]}
    if flags.get("limit") is not None:
        overrides["curation.limit"] = flags["limit"]
    if flags.get("out"):
        overrides["out"] = str(flags["out"])
    overrides.update(_parse_set(flags.get("set_items") or ()))
    return overrides


@click.command()
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML or TOML config.")
@click.option("--recipe", metavar="NAME", help="Start from a shipped recipe (`mmat recipes`); --config and flags override it.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (overrides `out:`).")
@click.option("--source", help="Source name (overrides `source:`).")
@click.option("--source-path", help="Local path for the source.")
@click.option("--llm", help="LLM backend name (offline, openai, anthropic, ...).")
@click.option("--model", help="Model name for the LLM backend.")
@click.option("--tools", help="Comma-separated operators to enable ('' for none).")
@click.option("--critics", help="Comma-separated critics.")
@click.option("--formatters", help="Comma-separated formatters (rr, orr, exports).")
@click.option("--executor", help="Executor (local, ray).")
@click.option("--ray-address", metavar="ADDR", help="Ray cluster to join (implies --executor ray), e.g. ray://head:10001 or auto.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path), metavar="RUN_DIR",
              help="Continue an interrupted run in RUN_DIR with the configuration it started with (other options override it).")
@click.option("--limit", type=int, help="Keep at most N samples after curation.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override any config key, e.g. engine.max_turns=6.")
@click.option("--dry-run", is_flag=True, help="Count what each source yields after curation; no model call.")
@click.option("--force", is_flag=True, help="Write into an --out folder that holds files mmat did not write.")
@click.option("--min-yield", "min_yield", metavar="N|FRACTION",
              help="Fail (exit 2, outputs still written) when fewer samples are kept: a count (10) or a share of "
                   "the finished samples (0.5 or 50%%). Default: fail only when nothing at all was kept; 0 = never.")
def build(config_file: Path | None, out: Path | None, dry_run: bool, force: bool, min_yield: str | None,
          **flags: Any) -> None:
    """Build RR/ORR training data. With no config, runs the bundled sample with the offline backend."""
    with plain_warnings():
        _build(config_file, out, dry_run, force, min_yield, **flags)


def _build(config_file: Path | None, out: Path | None, dry_run: bool, force: bool, min_yield: str | None,
           **flags: Any) -> None:
    from mmat_core.pipeline import Pipeline
    from mmat_core.preflight import load_checked

    resume_dir: Path | None = flags.pop("resume_dir", None)
    wanted = parse_min_yield(min_yield)
    overrides = collect_overrides(out=out, **flags)
    if resume_dir is not None:
        from mmat_core.resume import stored_config

        if out is not None and Path(out).resolve() != resume_dir.resolve():
            raise ConfigError(f"--resume {resume_dir} and --out {out} name different run directories; give one of them")
        # The run's own configuration first; a config file or flags given now override it (and a
        # change is then detected and handled by resume.on_config_change).
        base = {} if config_file else stored_config(resume_dir)
        overrides = {**base, **overrides, "out": str(resume_dir)}
    recipe: str | None = flags.pop("recipe", None)
    # Everything the build still lacks (keys, weights, paths), in one message, before any model
    # call or folder: for a recipe, a copied recipe given with --config, or flags alike.
    config = load_checked(config_file, overrides, recipe)
    pipeline = Pipeline.from_config(config, config_file=str(config_file) if config_file else None)
    if dry_run:
        _dry_run(pipeline)
        return
    if not config.out:
        raise ConfigError("no output directory: give --out DIR or `out:` in the config", file=str(config_file) if config_file else None, key="out")
    try:
        if config.llm_engine.progress and pipeline.executor.name in ("local", "ray"):  # both report progress
            from mmat_core.engine.progress import LiveProgress

            display = LiveProgress()
            try:
                result = pipeline.run(Path(config.out), progress=display, force=force)
            finally:
                display.close()
        else:
            result = pipeline.run(Path(config.out), force=force)
    except KeyboardInterrupt:
        # Finished samples are in the run store already (and their calls in the cache).
        click.echo(f"Interrupted: the samples finished so far are saved. Resume with: mmat build --resume {config.out}",
                   err=True)
        raise
    _summary(result, config)
    _departures(config)
    check_yield(result.manifest, wanted)


def parse_min_yield(value: str | None) -> int | float | None:
    """``--min-yield``: None (the default rule), a count (int) or a share in (0, 1] (float)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1]) / 100
        elif "." in text:
            share = float(text)
        else:
            count = int(text)
            if count < 0:
                raise ValueError
            return count
    except ValueError:
        raise ConfigError(f"--min-yield expects a count (10), a share (0.5) or a percentage (50%), got {value!r}") from None
    if not 0 <= share <= 1:
        raise ConfigError(f"--min-yield share must lie between 0 and 1 (or 0% and 100%), got {value!r}")
    return share


def check_yield(manifest: Any, wanted: int | float | None) -> None:
    """Raise LowYieldError, naming the top reasons, when the run kept too few samples."""
    from mmat_core.errors import LowYieldError

    counts = manifest.counts
    kept, finished = counts.get("kept", 0), counts.get("finished", 0)
    met = finished + counts.get("rejected", 0)
    if finished == 0 and wanted != 0:
        # Nothing reached generation: an empty file, a wrong path inside an archive, a filter that
        # left nothing. Said as such, not as "kept 0 of 0" (before, an empty source exited 0).
        raise no_samples_error(manifest)
    if wanted is None:
        short, needed = kept == 0 and met > 0, "at least one"
    elif isinstance(wanted, float):
        short, needed = finished > 0 and kept < wanted * finished, f"{wanted:.0%} of {finished} finished"
        short = short or (finished == 0 and wanted > 0 and met > 0)
    else:
        short, needed = kept < wanted, str(wanted)
    if not short:
        return
    reasons: Counter[str] = Counter()
    for key, stage in manifest.yield_by_source.items():
        if "/" not in key:  # sources only: sub-datasets repeat their source's reasons
            reasons.update(stage.reasons)
    top = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3)) or "no reason recorded"
    raise LowYieldError(f"kept {kept} of {finished} finished sample(s) ({counts.get('rejected', 0)} quarantined), "
                        f"fewer than --min-yield ({needed}); top reasons: {top}. The outputs and quarantine.jsonl are "
                        "written; see `mmat status` for every reason (--min-yield 0 accepts any yield)")


def describe_sources(config: dict[str, Any]) -> str:
    """The configured sources as ``name (path)``, comma-separated, for messages."""
    specs = config.get("source") or []
    names = []
    for spec in specs if isinstance(specs, list) else [specs]:
        if isinstance(spec, dict):
            where = spec.get("path") or spec.get("dataset") or spec.get("repo")
            names.append(f"{spec.get('name', '?')} ({where})" if where else str(spec.get("name", "?")))
    return ", ".join(names) or "(no source)"


def no_samples_error(manifest: Any) -> Exception:
    """The one-line :class:`NoSamplesError` of a build that had no sample to build: which sources,
    and the top quarantine reasons when every row was quarantined."""
    from mmat_core.errors import NoSamplesError

    counts = manifest.counts
    rejected = counts.get("rejected", 0)
    sources = describe_sources(manifest.config)
    if rejected:
        reasons: Counter[str] = Counter()
        for key, stage in manifest.yield_by_source.items():
            if "/" not in key:
                reasons.update(stage.reasons)
        top = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3)) or "no reason recorded"
        what = (f"no row read from {sources} passed: {rejected} quarantined (top reasons: {top}); "
                "see quarantine.jsonl or `mmat status` for every row")
    else:
        what = (f"the source(s) {sources} yielded no row at all (an empty file, or curation's limit, sample_rate "
                "or quotas left nothing); check the path and the curation settings")
    return NoSamplesError(f"no sample to build: {what}. The (empty) outputs are written; --min-yield 0 accepts an empty build")


def _departures(config: Any) -> None:
    """Which of the paper's operators (and web RAG) this build left off, and why."""
    from mmat_core.preflight import paper_departures

    for note in paper_departures(config):
        click.echo(f"  paper: {note}")


def _dry_run(pipeline: Any) -> None:
    from mmat_core.curation import Curator

    curator = Curator(pipeline.config.curation, pipeline.sources)
    for _ in pipeline.iter_samples(curator):
        pass
    kept, rejected, skipped = curator.kept_by, curator.rejected, curator.skipped

    def listing(counter: Counter[tuple[str, str]], key: str) -> str:
        return ", ".join(f"{reason} {n}" for (k, reason), n in sorted(counter.items()) if k == key)

    def within(counter: Counter[Any], source: str) -> int:
        return sum(n for k, n in counter.items() if (k if isinstance(k, str) else k[0]).split("/", 1)[0] == source)

    keys = set(kept) | {k for k, _ in rejected} | {k for k, _ in skipped}
    click.echo("Dry run: samples each source would yield after curation (no model call)")
    for source in sorted({k.split("/", 1)[0] for k in keys}):
        # The source's line sums its sub-datasets; reasons listed there are rows with no sub-dataset.
        line = f"  {source:<34} {within(kept, source):>8} samples   rejected {within(rejected, source)}, skipped {within(skipped, source)}"
        own = listing(rejected, source)
        click.echo(line + (f"   ({own})" if own else ""))
        for key in sorted(k for k in keys if k.startswith(source + "/")):
            reasons, skips = listing(rejected, key), listing(skipped, key)
            click.echo(f"    {key:<32} {kept[key]:>8} samples" + (f"   rejected: {reasons}" if reasons else "")
                       + (f"   skipped: {skips}" if skips else ""))
    click.echo(f"  {'total':<34} {sum(kept.values()):>8} samples   {sum(rejected.values())} rejected, "
               f"{sum(skipped.values())} skipped by sampling or quotas")


def limits_line(engine: dict[str, Any], config: Any) -> str:
    """What bounded the model calls, naming the setting to change: the scheduler's own account,
    unless no scheduler limit bound and a set ``engine.concurrency`` held the calls below
    ``llm_engine.concurrency`` (the scheduler cannot see that one)."""
    from mmat_core.engine.settings import samples_bind_calls

    if engine.get("binding") == "server" and config is not None:
        model = config.llm.options.get("model")
        advice = samples_bind_calls(config.engine, config.llm_engine, config.llm.name,
                                    model if isinstance(model, str) else None)
        if advice:
            return f"{engine.get('name', config.llm.name)}: {advice}"
    return str(engine.get("binding_summary", ""))


def _summary(result: Any, config: Any = None) -> None:
    manifest = result.manifest
    counts = manifest.counts
    click.echo(f"Run written to {result.out_dir}")
    click.echo(f"  samples: {counts.get('finished', 0)} finished, {counts.get('kept', 0)} kept, "
               f"{counts.get('rejected', 0)} rejected at the source, {counts.get('model_calls', 0)} model calls made"
               + (f" ({counts['model_reasks']} re-asks)" if counts.get("model_reasks") else ""))
    from mmat_core.yields import yield_table

    for line in yield_table(dict(sorted(manifest.yield_by_source.items()))):
        click.echo(line)
    for name, path in sorted(result.outputs.items()):
        click.echo(f"  {name}: {path}")
    click.echo(f"  run.json: {result.out_dir / 'run.json'}")
    engine = getattr(result, "engine", None) or {}
    if engine:
        # What bounded the model calls, so the next run knows which limit to raise.
        reasks = f" ({engine['reasks']} re-asks)" if engine.get("reasks") else ""
        click.echo(f"  model calls: {engine.get('calls_made', 0)} made{reasks}, {engine.get('cached_calls', 0)} from cache, "
                   f"{engine.get('failed_calls', 0)} failed, {engine.get('retries', 0)} retries, "
                   f"{engine.get('prompt_tokens', 0) + engine.get('completion_tokens', 0):,} tokens, "
                   f"${engine.get('cost_usd', 0.0):.4f} estimated")
        click.echo(f"  limits: {limits_line(engine, config)}")
        for message in engine.get("breaker_events", []):
            click.echo(f"  circuit breaker: {message}")
        if engine.get("price_warning"):
            click.echo(f"  prices: {engine['price_warning']}")
