"""``mmat tools`` and ``mmat tool run``: inspect and debug operators. (``mmat rag`` is a command of the
built-in ``search`` plugin.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def _json_arg(value: str | None, what: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg} at position {exc.pos}", param_hint=what) from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"objects\": [\"cat\"]}'", param_hint=what)
    return data


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (name, version, schema, ...).")
def tools(as_json: bool) -> None:
    """List the operators that loaded plugins provide, with their argument and option schemas."""
    from mmat_core.cli.options import option_rows
    from mmat_core.plugins import get_plugin_manager

    tools = get_plugin_manager().registry("tool").items()
    if as_json:
        rows = [{
            "name": name,
            "version": cls.version,
            "plugin": cls.plugin,
            "label": cls.result_label(),
            "description": cls.description,
            "args_schema": cls.args_schema,
            "options_schema": cls.options_schema(),
        } for name, cls in tools]
        click.echo(json.dumps(rows, indent=2))
        return
    for name, cls in tools:
        click.echo(f"{name} {cls.version}  ({cls.plugin})")
        click.echo(f"    {cls.description}")
        click.echo(f"    results introduced as: Here are {cls.result_label()} results from the previous step: ...")
        properties = cls.args_schema.get("properties") or {}
        click.echo(f"    arguments: {json.dumps(properties) if properties else 'none'}")
        # The defaults from the fields: the text listing builds no schema (the JSON one does).
        options = {option: row.get("default") for option, row in option_rows(cls.Options).items()}
        click.echo(f"    options: {json.dumps(options)}")


@click.group()
def tool() -> None:
    """Run one operator by hand."""


@tool.command("run")
@click.argument("name")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--args", "args_json", metavar="JSON", help="Arguments, checked against the tool's schema.")
@click.option("--options", "options_json", metavar="JSON", help="Tool options, as in a config's tools entry.")
@click.option("--question", default="Describe the image.", show_default=True,
              help="The question tools that read it (image_caption, label_bbox) see.")
@click.option("--llm", "llm_name", default="offline", show_default=True, help="LLM backend for image_caption.")
@click.option("--model", help="Model name for the LLM backend.")
def tool_run(name: str, image: Path, args_json: str | None, options_json: str | None, question: str,
             llm_name: str, model: str | None) -> None:
    """Run operator NAME on IMAGE and print the call as JSON (result text, data, error, latency)."""
    from mmat_core.images import ImageError
    from mmat_core.single_calls import run_tool

    args = _json_arg(args_json, "--args")
    options = _json_arg(options_json, "--options")
    llm: dict[str, Any] = {"name": llm_name, **({"model": model} if model else {})}
    try:
        call = run_tool(name, image, args=args, options=options, question=question, llm=llm).model_dump(mode="json")
    except ImageError as exc:
        raise click.BadParameter(str(exc), param_hint="IMAGE") from None
    click.echo(json.dumps(call, indent=2, ensure_ascii=False))
    if call.get("error"):
        sys.exit(1)
