"""The run viewer: a local web page over a run directory or an exported JSONL file.

A built-in plugin beside the core: it adds ``mmat view RUN_DIR_OR_FILE`` through the
``register_commands`` hook, the way any third party adds a command. The pieces:

- :mod:`mmat_plugins.viewer.dataset`: opens what the user points at (a run directory read-only, or a
  JSONL file imported into a temporary SQLite file) and turns one stored row into the JSON the
  page draws (dialogue, boxes, RR and ORR exactly as exported).
- :mod:`mmat_plugins.viewer.catalog`: the viewer's own index beside the run (filters, full-text
  search, dashboard aggregates), built incrementally so paging stays fast on a million samples.
- :mod:`mmat_plugins.viewer.server`: the standard-library HTTP server and its JSON API.
- :mod:`mmat_plugins.viewer.command`: the ``mmat view`` command.
- ``static/``: the page itself (vanilla JavaScript, no CDN; data is always inserted as text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:  # imported lazily: ``mmat --help`` must not pay for the viewer
    import click
    from mmat_plugins.viewer.server import ViewerServer

__all__ = ["ViewerServer", "open_viewer", "register_commands"]


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``mmat view``."""
    from mmat_plugins.viewer.command import view

    cli.add_command(view)


def open_viewer(target: str, *, host: str = "127.0.0.1", port: int = 0, index_dir: str | None = None) -> ViewerServer:
    """Open ``target`` (a run directory or a JSONL file) and return a server ready to start."""
    from pathlib import Path

    from mmat_plugins.viewer.server import ViewerServer

    return ViewerServer.open(Path(target), host=host, port=port, index_dir=Path(index_dir) if index_dir else None)


def __getattr__(name: str) -> object:
    if name == "ViewerServer":
        from mmat_plugins.viewer.server import ViewerServer

        return ViewerServer
    raise AttributeError(name)
