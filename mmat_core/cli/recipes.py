"""``mmat recipes``: list the shipped recipes, or print one (``mmat recipes show NAME``)."""

from __future__ import annotations

import click


@click.group(invoke_without_command=True)
@click.pass_context
def recipes(ctx: click.Context) -> None:
    """List the shipped recipes, one line each; `mmat recipes show NAME` prints one to copy."""
    if ctx.invoked_subcommand is not None:
        return
    from mmat_core.recipes import recipe_description, recipe_names

    names = recipe_names()
    width = max(len(name) for name in names)
    for name in names:
        click.echo(f"{name:<{width}}  {recipe_description(name)}")


@recipes.command()
@click.argument("name")
def show(name: str) -> None:
    """Print recipe NAME: a plain config file (`mmat recipes show paper > my.yaml`)."""
    from mmat_core.recipes import recipe_path

    click.echo(recipe_path(name).read_text(encoding="utf-8"), nl=False)
