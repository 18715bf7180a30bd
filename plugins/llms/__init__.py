"""Built-in LLM backends: ``offline`` (no model), ``openai`` (and any OpenAI-compatible server)
and ``anthropic``. The HTTP clients are imported only when a backend makes its first call."""

from __future__ import annotations

from collections.abc import Callable

from mmat_core import hookimpl
from mmat_core.components import LLMBackend
from mmat_plugins.llms.anthropic_backend import AnthropicBackend
from mmat_plugins.llms.offline import OfflineBackend
from mmat_plugins.llms.openai_backend import OpenAIBackend


@hookimpl
def register_llms(register: Callable[[type[LLMBackend]], None]) -> None:
    """Register the built-in LLM backends."""
    register(OfflineBackend)
    register(OpenAIBackend)
    register(AnthropicBackend)
