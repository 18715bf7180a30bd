"""Built-in LLM backends."""

from __future__ import annotations

from collections.abc import Callable

from mmat_core import hookimpl
from mmat_core.components import LLMBackend
from mmat_plugins.llms.offline import OfflineBackend


@hookimpl
def register_llms(register: Callable[[type[LLMBackend]], None]) -> None:
    """Register the built-in LLM backends."""
    register(OfflineBackend)
