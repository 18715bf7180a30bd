"""Built-in sources."""

from __future__ import annotations

from collections.abc import Callable

from mmat_core import hookimpl
from mmat_core.components import Source
from mmat_plugins.sources.sample import SampleSource


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    """Register the built-in sources."""
    register(SampleSource)
