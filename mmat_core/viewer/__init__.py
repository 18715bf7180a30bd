"""The run viewer: a local web page over a run directory or an exported JSONL file.

``mmat view RUN_DIR_OR_FILE`` serves it. The pieces:

- :mod:`mmat_core.viewer.dataset`: opens what the user points at (a run directory read-only, or a
  JSONL file imported into a temporary SQLite file) and turns one stored row into the JSON the
  page draws (dialogue, boxes, RR and ORR exactly as exported).
- :mod:`mmat_core.viewer.catalog`: the viewer's own index beside the run (filters, full-text
  search, dashboard aggregates), built incrementally so paging stays fast on a million samples.
- :mod:`mmat_core.viewer.server`: the standard-library HTTP server and its JSON API.
- ``static/``: the page itself (vanilla JavaScript, no CDN; data is always inserted as text).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily: ``mmat --help`` must not pay for the viewer
    from mmat_core.viewer.server import ViewerServer

__all__ = ["ViewerServer", "open_viewer"]


def open_viewer(target: str, *, host: str = "127.0.0.1", port: int = 0, index_dir: str | None = None) -> ViewerServer:
    """Open ``target`` (a run directory or a JSONL file) and return a server ready to start."""
    from pathlib import Path

    from mmat_core.viewer.server import ViewerServer

    return ViewerServer.open(Path(target), host=host, port=port, index_dir=Path(index_dir) if index_dir else None)


def __getattr__(name: str) -> object:
    if name == "ViewerServer":
        from mmat_core.viewer.server import ViewerServer

        return ViewerServer
    raise AttributeError(name)
