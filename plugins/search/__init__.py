"""Built-in retrieval backends for RAG: a local corpus (offline), five web search APIs, and ``web``
(whichever of the five has its key set)."""

from __future__ import annotations

from collections.abc import Callable

from mmat_plugins.search.local import LocalCorpusSearch
from mmat_plugins.search.web import WEB_BACKENDS, AnyWebSearch

from mmat_core import hookimpl
from mmat_core.components import SearchBackend


@hookimpl
def register_search_backends(register: Callable[[type[SearchBackend]], None]) -> None:
    """Register the built-in search backends."""
    register(LocalCorpusSearch)
    for backend in WEB_BACKENDS:
        register(backend)
    register(AnyWebSearch)
