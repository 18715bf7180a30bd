"""Built-in sources: the bundled sample, the paper's five collections and generic formats."""

from __future__ import annotations

from collections.abc import Callable

from mmat_core import hookimpl
from mmat_core.components import Source
from mmat_plugins.sources.cauldron import CauldronSource
from mmat_plugins.sources.generic import DatasetsSource, ImageFolderSource, JsonlSource, LlavaSource, ShareGPTSource
from mmat_plugins.sources.infoseek import InfoSeekSource
from mmat_plugins.sources.llava_cot import LlavaCoTSource
from mmat_plugins.sources.sample import SampleSource
from mmat_plugins.sources.tabmwp import TabMWPSource
from mmat_plugins.sources.visual_cot import VisualCoTSource

#: Every built-in source, in the order ``mmat sources`` lists them.
BUILTIN_SOURCES: tuple[type[Source], ...] = (
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
    for source in BUILTIN_SOURCES:
        register(source)
