"""Built-in LLM backends: ``offline`` (no model), ``openai`` (and any OpenAI-compatible server)
and ``anthropic``. The HTTP clients are imported only when a backend makes its first call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    from mmat_core import LLMBackend


@hookimpl
def register_llms(register: Callable[[type[LLMBackend]], None]) -> None:
    """Register the built-in LLM backends (imported here, so importing this module stays cheap)."""
    from mmat_plugins.llms.anthropic_backend import AnthropicBackend
    from mmat_plugins.llms.offline import OfflineBackend
    from mmat_plugins.llms.openai_backend import OpenAIBackend

    register(OfflineBackend)
    register(OpenAIBackend)
    register(AnthropicBackend)
