"""Built-in formatters: RR and ORR (the paper's two layouts) and exports for training frameworks."""

from __future__ import annotations

from collections.abc import Callable

from mmat_core import hookimpl
from mmat_core.components import Formatter
from mmat_plugins.formatters.rr_orr import ORRFormatter, RRFormatter


@hookimpl
def register_formatters(register: Callable[[type[Formatter]], None]) -> None:
    """Register the built-in formatters."""
    register(RRFormatter)
    register(ORRFormatter)
