"""Mmat's engine as a library: send many chat requests (text and images) through the same cache,
scheduler, limits, retries and cost accounting a build uses, and get the answers back in order.
:class:`ChatEngine` is the entry point (docs/python-api.md, "Many chat requests")."""

from mmat_core.chat.engine import ChatEngine, ChatResult, ChatResults, ChatRowError, ChatSummary
from mmat_core.chat.rows import ChatRequest

__all__ = ["ChatEngine", "ChatRequest", "ChatResult", "ChatResults", "ChatRowError", "ChatSummary"]
