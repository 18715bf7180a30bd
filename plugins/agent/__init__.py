"""The agent runtime: run a model tuned on RR or ORR data with its tools, the way it was trained.

A built-in plugin beside the core: it adds ``mmat infer`` and ``mmat serve`` (the agent behind an
OpenAI-compatible endpoint) through the ``register_commands`` hook.
From Python::

    from mmat_plugins.agent import AgentRuntime, open_chat_model

    model = open_chat_model("my-rr-model", endpoint="http://127.0.0.1:8000/v1")
    runtime = AgentRuntime.from_names(model, tools=["image_caption", "ocr"], search="local")
    result = runtime.run("photo.jpg", "Who piloted this spacecraft first?")
    print(result.answer, len(result.trace.steps))

The names below are imported on first use, so loading the plugin (every ``mmat`` command that
loads plugins does) does not import the runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmat_core import hookimpl

if TYPE_CHECKING:
    import click
    from mmat_plugins.agent.agent import MODES, AgentResult, AgentRuntime
    from mmat_plugins.agent.chat import (
        ChatModel,
        ChatReply,
        GenerationSettings,
        OpenAIChatModel,
        TransformersChatModel,
        open_chat_model,
    )
    from mmat_plugins.agent.offline import OfflineChatModel
    from mmat_plugins.agent.parsing import ParsedAnswer, ParsedStep, parse_answer, parse_step
    from mmat_plugins.agent.serve import AgentServer, agent_server
    from mmat_plugins.agent.toolcache import ToolResultCache

__all__ = [
    "MODES",
    "AgentResult",
    "AgentRuntime",
    "AgentServer",
    "ChatModel",
    "ChatReply",
    "GenerationSettings",
    "OfflineChatModel",
    "OpenAIChatModel",
    "ParsedAnswer",
    "ParsedStep",
    "ToolResultCache",
    "TransformersChatModel",
    "agent_server",
    "open_chat_model",
    "parse_answer",
    "parse_step",
    "register_commands",
]

_LAZY = {
    "MODES": "agent",
    "AgentResult": "agent",
    "AgentRuntime": "agent",
    "AgentServer": "serve",
    "agent_server": "serve",
    "OfflineChatModel": "offline",
    "ChatModel": "chat",
    "ChatReply": "chat",
    "GenerationSettings": "chat",
    "ToolResultCache": "toolcache",
    "OpenAIChatModel": "chat",
    "TransformersChatModel": "chat",
    "open_chat_model": "chat",
    "ParsedAnswer": "parsing",
    "ParsedStep": "parsing",
    "parse_answer": "parsing",
    "parse_step": "parsing",
}


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``mmat infer`` and ``mmat serve``."""
    from mmat_plugins.agent.command import infer, serve

    cli.add_command(infer)
    cli.add_command(serve)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmat_plugins.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mmat_plugins.agent.{module}"), name)
