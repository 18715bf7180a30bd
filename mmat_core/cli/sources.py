"""``mmat sources``: every source with its options, sub-datasets and licence."""

from __future__ import annotations

import json
from typing import Any

import click


def describe(cls: Any) -> dict[str, Any]:
    """What ``mmat sources`` shows of one source class (JSON-ready)."""
    from mmat_core.cli.options import option_rows

    options = option_rows(cls.Options)  # from the fields: no schema, no validator built
    return {
        "name": cls.name,
        "plugin": cls.plugin,
        "version": cls.version,
        "description": cls.description,
        "licence": cls.licence,
        "subsets": list(cls.subsets),
        "paper_mix": dict(getattr(cls, "paper_mix", {}) or {}),
        "options": options,
    }


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sources(name: str | None, as_json: bool) -> None:
    """List every source (or only NAME) with its options, sub-datasets and licence."""
    from mmat_core.plugins import get_plugin_manager

    registry = get_plugin_manager().registry("source")
    classes = [registry.get(name)] if name else [cls for _, cls in registry.items()]
    infos = [describe(cls) for cls in classes]
    if as_json:
        click.echo(json.dumps(infos, indent=2, default=str))
        return
    for info in infos:
        click.echo(f"{info['name']} {info['version']}  ({info['plugin']}): {info['description']}")
        click.echo(f"    licence: {info['licence'] or 'set by the data (option licence)'}")
        if info["subsets"]:
            click.echo(f"    sub-datasets: {', '.join(info['subsets'])}")
        if info["paper_mix"]:
            click.echo(f"    paper mix (dialogues): {', '.join(f'{k} {v}' for k, v in info['paper_mix'].items())}")
        for option, spec in info["options"].items():
            default = " (required)" if spec["required"] else (f" = {json.dumps(spec['default'], default=str)}" if "default" in spec else "")
            described = f"  {spec['description']}" if spec["description"] else ""
            click.echo(f"    {option}: {spec['type']}{default}{described}")
        click.echo("")
