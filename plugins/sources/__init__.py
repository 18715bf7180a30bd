"""Built-in sources: the bundled sample, the paper's five collections and generic formats.

The source classes are imported inside the hook, not here: importing this module (every ``mmat``
command that lists plugin commands does) must not import them, nor pydantic with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    from mmat_core import Source


def builtin_sources() -> tuple[type[Source], ...]:
    """Every built-in source, in the order ``mmat sources`` lists them."""
    from mmat_plugins.sources.cauldron import CauldronSource
    from mmat_plugins.sources.generic import DatasetsSource, ImageFolderSource, JsonlSource, LlavaSource, ShareGPTSource
    from mmat_plugins.sources.infoseek import InfoSeekSource
    from mmat_plugins.sources.llava_cot import LlavaCoTSource
    from mmat_plugins.sources.sample import SampleSource
    from mmat_plugins.sources.tabmwp import TabMWPSource
    from mmat_plugins.sources.visual_cot import VisualCoTSource

    return (
        SampleSource,
        VisualCoTSource,
        LlavaCoTSource,
        CauldronSource,
        TabMWPSource,
        InfoSeekSource,
        JsonlSource,
        LlavaSource,
        ShareGPTSource,
        ImageFolderSource,
        DatasetsSource,
    )


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    """Register the built-in sources."""
    for source in builtin_sources():
        register(source)


def __getattr__(name: str) -> object:
    # BUILTIN_SOURCES was a module constant; it is built on first use now (see the docstring).
    if name == "BUILTIN_SOURCES":
        return builtin_sources()
    raise AttributeError(f"module 'mmat_plugins.sources' has no attribute {name!r}")
