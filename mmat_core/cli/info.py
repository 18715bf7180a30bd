"""``mmat plugins``, ``mmat validate`` and ``mmat schemas``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List every plugin: name, version, hooks and the components it provides."""
    from mmat_core.plugins import get_plugin_manager

    infos = get_plugin_manager().info()
    if as_json:
        click.echo(json.dumps([info.as_dict() for info in infos], indent=2))
        return
    for info in infos:
        click.echo(f"{info.name} {info.version}  ({info.distribution})")
        if info.error:
            click.echo(f"    not loaded: {info.error}")
        for family, names in sorted(info.components.items()):
            click.echo(f"    {family}: {', '.join(sorted(names))}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--schema", "schema_name", help="Schema to use (default: guessed from the file). See `mmat schemas --list`.")
@click.option("--max-errors", default=50, show_default=True, help="Stop listing after this many problems.")
def validate(file: Path, schema_name: str | None, max_errors: int) -> None:
    """Check FILE (JSON or JSONL) against its schema; every bad line is reported with its number."""
    from mmat_core.schemas import validate_file

    name, count, problems = validate_file(file, schema_name)
    if not problems:
        click.echo(f"{file}: {count} record(s) valid against {name}")
        return
    for problem in problems[:max_errors]:
        click.echo(f"{file}: {problem}", err=True)
    if len(problems) > max_errors:
        click.echo(f"... and {len(problems) - max_errors} more", err=True)
    bad_lines = len({p.record if p.record is not None else p.line for p in problems})
    click.echo(f"{file}: {bad_lines} of {count} record(s) invalid against {name}", err=True)
    sys.exit(1)


@click.command()
@click.option("--list", "list_names", is_flag=True, help="List schema names.")
@click.option("--write", "write_dir", type=click.Path(file_okay=False, path_type=Path), help="Write every model schema here.")
@click.option("--check", "check_dir", type=click.Path(file_okay=False, path_type=Path), help="Fail if the schemas here drifted.")
@click.argument("name", required=False)
def schemas(list_names: bool, write_dir: Path | None, check_dir: Path | None, name: str | None) -> None:
    """Print the schema NAME, list names, write them all, or check a folder for drift."""
    from mmat_core.schemas import MODEL_SCHEMAS, all_schema_names, render, schema_for, write_schemas

    if list_names:
        click.echo("\n".join(all_schema_names()))
    elif write_dir:
        for path in write_schemas(write_dir):
            click.echo(f"wrote {path}")
    elif check_dir:
        drifted = [n for n in sorted(MODEL_SCHEMAS)
                   if not (check_dir / f"{n}.schema.json").exists()
                   or (check_dir / f"{n}.schema.json").read_text(encoding="utf-8") != render(schema_for(n))]
        if drifted:
            click.echo(f"drifted: {', '.join(drifted)}; run `mmat schemas --write {check_dir}`", err=True)
            sys.exit(1)
        click.echo("schemas are up to date")
    elif name:
        click.echo(render(schema_for(name)), nl=False)
    else:
        raise click.UsageError("give a NAME, --list, --write DIR or --check DIR")
