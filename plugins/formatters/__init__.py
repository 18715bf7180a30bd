"""Built-in formatters: RR and ORR (the paper's two layouts) and exports for training frameworks.

The formatter classes are imported inside the hook, so importing this module stays cheap."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    from mmat_core import Formatter


def builtin_formatters() -> tuple[type[Formatter], ...]:
    """Every built-in formatter, in the order ``mmat export --list`` shows them."""
    from mmat_plugins.formatters.exports import (
        InternVLFormatter,
        LlamaFactoryFormatter,
        LlavaFormatter,
        MsSwiftFormatter,
        OpenAIChatFormatter,
    )
    from mmat_plugins.formatters.hf_dataset import HFDatasetFormatter
    from mmat_plugins.formatters.rr_orr import ORRFormatter, RRFormatter

    return (
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
    for formatter in builtin_formatters():
        register(formatter)


def __getattr__(name: str) -> object:
    # BUILTIN_FORMATTERS was a module constant; it is built on first use now (see the docstring).
    if name == "BUILTIN_FORMATTERS":
        return builtin_formatters()
    raise AttributeError(f"module 'mmat_plugins.formatters' has no attribute {name!r}")
