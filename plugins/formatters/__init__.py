"""Built-in formatters: RR and ORR (the paper's two layouts) and exports for training frameworks."""

from __future__ import annotations

from collections.abc import Callable

from mmat_plugins.formatters.exports import (
    InternVLFormatter,
    LlamaFactoryFormatter,
    LlavaFormatter,
    MsSwiftFormatter,
    OpenAIChatFormatter,
)
from mmat_plugins.formatters.hf_dataset import HFDatasetFormatter
from mmat_plugins.formatters.rr_orr import ORRFormatter, RRFormatter

from mmat_core import hookimpl
from mmat_core.components import Formatter

#: Every built-in formatter, in the order ``mmat export --list`` shows them.
BUILTIN_FORMATTERS: tuple[type[Formatter], ...] = (
    RRFormatter,
    ORRFormatter,
    MsSwiftFormatter,
    LlamaFactoryFormatter,
    InternVLFormatter,
    LlavaFormatter,
    OpenAIChatFormatter,
    HFDatasetFormatter,
)


@hookimpl
def register_formatters(register: Callable[[type[Formatter]], None]) -> None:
    """Register the built-in formatters."""
    for formatter in BUILTIN_FORMATTERS:
        register(formatter)
