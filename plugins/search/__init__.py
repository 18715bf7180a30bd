"""Built-in retrieval backends for RAG."""

from __future__ import annotations

from collections.abc import Callable

from mmat_core import hookimpl
from mmat_core.components import SearchBackend
from mmat_plugins.search.local import LocalCorpusSearch


@hookimpl
def register_search_backends(register: Callable[[type[SearchBackend]], None]) -> None:
    """Register the built-in search backends."""
    register(LocalCorpusSearch)
