"""Built-in retrieval backends for RAG: a local corpus (offline), five web search APIs, and ``web``
(whichever of the five has its key set); and the ``mmat rag index|search`` commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    import click

    from mmat_core import SearchBackend


@hookimpl
def register_search_backends(register: Callable[[type[SearchBackend]], None]) -> None:
    """Register the built-in search backends (imported here, so importing this module stays cheap)."""
    from mmat_plugins.search.local import LocalCorpusSearch
    from mmat_plugins.search.web import WEB_BACKENDS, AnyWebSearch

    register(LocalCorpusSearch)
    for backend in WEB_BACKENDS:
        register(backend)
    register(AnyWebSearch)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``mmat rag``."""
    from mmat_plugins.search.command import rag

    cli.add_command(rag)
