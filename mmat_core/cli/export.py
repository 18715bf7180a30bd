"""``mmat export`` (any format from a run's stored Traces) and ``mmat import-rr`` (RR JSONL -> Traces)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from mmat_core.errors import ConfigError


def parse_options(formats: tuple[str, ...], items: tuple[str, ...]) -> list[dict[str, Any]]:
    """Formatter specs from ``--format`` names and ``-o [NAME.]KEY=VALUE`` options.

    ``-o view=orr`` applies to every format given; ``-o rr.naming=paper`` to ``rr`` only. Values are
    read as YAML scalars (``0.05`` is a number, ``true`` a boolean).
    """
    import yaml

    specs: list[dict[str, Any]] = [{"name": name} for name in formats]
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"-o expects [FORMAT.]KEY=VALUE, got {item!r}")
        target, dot, option = key.rpartition(".")
        parsed = yaml.safe_load(value) if value else ""
        matched = [spec for spec in specs if not dot or spec["name"] == target]
        if not matched:
            raise ConfigError(f"-o {item!r} names format {target!r}, which is not among --format {', '.join(formats)}")
        for spec in matched:
            spec[option] = parsed
    return specs


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False)
@click.option("-f", "--format", "formats", multiple=True, metavar="NAME",
              help="Format to write (repeatable): rr, orr, ms_swift, llama_factory, internvl, llava, openai_chat, hf_dataset, ...")
@click.option("-o", "--option", "options", multiple=True, metavar="[FORMAT.]KEY=VALUE",
              help="Formatter option, e.g. -o view=orr, -o rr.naming=paper, -o val_ratio=0.05, -o image_root=/data/images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: the run folder).")
@click.option("--status", type=click.Choice(["kept", "reflected", "flagged"]),
              help="Export only the kept traces with this status (dropped and failed traces are never training data).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes for line-oriented formats (rr, orr, ms_swift, openai_chat) on runs of 20,000+ traces; "
                   "the output is byte-identical to one process.")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write a self-contained dataset folder instead: the rows, the images they use (content-addressed, "
                   "relative paths), the Hugging Face dataset and card, and manifest.json. Loads from any machine.")
@click.option("--force", is_flag=True,
              help="With --bundle: write into a folder that holds an earlier bundle (replaced) or other files (kept, "
                   "named in a warning and in the manifest).")
@click.option("--verify-bundle", "verify_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Check a bundle (e.g. after copying it) against its manifest.json: every file present with its "
                   "size and SHA-256, nothing unlisted; exit 1 naming each problem. Needs no RUN_DIR.")
@click.option("--push-to-hub", "push_repo", metavar="REPO",
              help="Push the Hugging Face dataset (the bundle's, or the hf_dataset export) to the Hub with datasets' "
                   "own push_to_hub (needs a token: HF_TOKEN or `hf auth login`).")
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repository private.")
@click.option("--check", is_flag=True,
              help="Feed each written format to its consumer's own loader (ms-swift, LLaMA-Factory, datasets, the "
                   "openai types) when installed, and say so when not.")
@click.option("--check-python", "check_pythons", multiple=True, metavar="[FORMAT=]PYTHON",
              help="Python whose environment holds the consumer for --check (default: this one), e.g. "
                   "--check-python ms_swift=/envs/swift/bin/python.")
@click.option("--check-timeout", default=1800, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds one consumer check may run before it is stopped and reported as failed.")
@click.option("--list", "list_formats", is_flag=True, help="List the formats and their options, then exit.")
def export(run_dir: Path | None, formats: tuple[str, ...], options: tuple[str, ...], out_dir: Path | None,
           status: str | None, workers: int, bundle_dir: Path | None, force: bool, verify_dir: Path | None,
           push_repo: str | None, private: bool, check: bool, check_pythons: tuple[str, ...], check_timeout: float,
           list_formats: bool) -> None:
    """Write FORMATs from the Traces stored in RUN_DIR. No model is called; the RR system prompt's
    operator list comes from the run itself."""
    from mmat_core.exporter import EXPORT_QUARANTINE, bundle_run, export_run

    if list_formats:
        _list_formats()
        return
    if verify_dir is not None:
        _verify(verify_dir)
        return
    if run_dir is None or not formats:
        raise click.UsageError("give RUN_DIR and at least one --format NAME (see `mmat export --list`)")
    if bundle_dir is not None and out_dir is not None:
        raise click.UsageError("give --bundle DIR or --out DIR, not both (a bundle is its own folder)")
    if force and bundle_dir is None:
        raise click.UsageError("--force applies to --bundle DIR only (a bundle folder that is not empty)")
    if push_repo and bundle_dir is None and "hf_dataset" not in formats:
        raise click.UsageError("--push-to-hub pushes the Hugging Face dataset: add --format hf_dataset or --bundle DIR")
    pythons = _check_pythons(check_pythons)
    from contextlib import nullcontext

    from mmat_core.rundir import RunDirLock

    started = time.monotonic()
    specs = parse_options(formats, options)
    if bundle_dir is not None:
        result = bundle_run(run_dir, specs, bundle_dir, status=status, force=force)
    else:
        # Writing into the run folder while a build writes there would race on the same files.
        into_run = out_dir is None or out_dir.resolve() == run_dir.resolve()
        with RunDirLock(run_dir, "mmat export") if into_run else nullcontext():
            result = export_run(run_dir, specs, out_dir, status=status, workers=workers)
    elapsed = time.monotonic() - started
    rate = f", {result.traces / elapsed:,.0f} traces/s" if elapsed > 0 and result.traces else ""
    click.echo(f"Exported {result.traces} stored trace(s) in {elapsed:.2f} s{rate}")
    for name, files in result.files.items():
        for path in files:
            click.echo(f"  {name}: {path}")
    if result.rejected:
        click.echo(f"  {len(result.rejected)} trace(s) left out, reasons in {result.out_dir / EXPORT_QUARANTINE}")
    failed = _run_checks(result, pythons, check_timeout) if check else False
    if push_repo:
        from mmat_core.exporter import push_to_hub

        url = push_to_hub(result, push_repo, private=private)
        click.echo(f"Pushed the Hugging Face dataset to {url}")
    if failed:
        raise SystemExit(1)


def _check_pythons(items: tuple[str, ...]) -> dict[str, str]:
    """``--check-python [FORMAT=]PYTHON`` values as {format or "": python}."""
    pythons: dict[str, str] = {}
    for item in items:
        name, sep, python = item.rpartition("=")
        if not Path(python).is_file():
            raise ConfigError(f"--check-python {item!r}: {python} is not a file (give the python of the consumer's environment)")
        pythons[name if sep else ""] = python
    return pythons


def _verify(bundle: Path) -> None:
    """``--verify-bundle``: one line per problem and exit 1, or one line saying all is well."""
    from mmat_core.exporter import verify_bundle

    problems = verify_bundle(bundle)
    if not problems:
        click.echo(f"{bundle}: every file matches the manifest (size and SHA-256)")
        return
    for problem in problems:
        click.echo(f"{bundle}: {problem}")
    click.echo(f"{bundle}: {len(problems)} problem(s): the bundle is not as it was written", err=True)
    raise SystemExit(1)


def _run_checks(result: Any, pythons: dict[str, str], timeout: float = 1800) -> bool:
    """Print each consumer check; True when a consumer refused rows."""
    from mmat_core.exporter import check_exports

    failed = False
    for report in check_exports(result, pythons, timeout=timeout):
        if report.status == "ok":
            click.echo(f"Check {report.format}: ok, {report.rows} row(s) read by the consumer's loader ({report.python})")
        elif report.status == "missing":
            click.echo(f"Check {report.format}: NOT RUN: {report.detail}; install it there, or give "
                       f"--check-python {report.format}=PYTHON of an environment that has it")
        elif report.status == "none":
            click.echo(f"Check {report.format}: no consumer package to run: {report.detail}")
        else:
            failed = True
            click.echo(f"Check {report.format}: FAILED ({len(report.problems)} problem(s)): {report.detail}")
            for problem in report.problems[1:5]:
                click.echo(f"    {problem}")
    return failed


def _list_formats() -> None:
    from mmat_core.plugins import get_plugin_manager

    for name, cls in get_plugin_manager().registry("formatter").items():
        click.echo(f"{name:<15} {cls.description}")
        for option, info in cls.Options.model_fields.items():
            default = info.default if info.default is not None else "-"
            click.echo(f"    {option:<16} default {default!s:<14} {info.description or ''}")


@click.command("import-rr")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New run folder to write the Traces into.")
@click.option("--source", default="imported", show_default=True, help="Source name for lines without provenance.")
@click.option("--image-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that relative image paths are resolved against (to hash the images).")
@click.option("--no-hash-images", is_flag=True, help="Do not read images to record their hashes (faster).")
def import_rr(files: tuple[Path, ...], out_dir: Path, source: str, image_root: Path | None, no_hash_images: bool) -> None:
    """Read RR JSONL FILES (mmat's layout, written by mmat or by hand) into Traces in a run folder,
    so ORR and every export can be derived: `mmat export OUT --format orr`."""
    from mmat_core.importer import import_rr as run_import

    result = run_import(list(files), out_dir, source=source, image_root=image_root, hash_images=not no_hash_images)
    click.echo(f"Imported {result.imported} trace(s) into {out_dir}; {result.rejected} line(s) rejected"
               + (f" (reasons in {out_dir / 'quarantine.jsonl'})" if result.rejected else ""))
    if result.context is not None:
        tools = ", ".join(t.name for t in result.context.tools) or "none"
        wording = "mmat's RR prompt" if result.context.rr_system is None else "a custom system prompt (kept verbatim)"
        click.echo(f"  system prompt: {wording}; operators: {tools}; retrieval {'on' if result.context.rag_enabled else 'off'}")
