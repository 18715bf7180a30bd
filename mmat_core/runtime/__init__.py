"""The agent runtime: run a model tuned on RR or ORR data with its tools, the way it was trained.

::

    from mmat_core.runtime import AgentRuntime, open_chat_model

    model = open_chat_model("my-rr-model", endpoint="http://127.0.0.1:8000/v1")
    runtime = AgentRuntime.from_names(model, tools=["image_caption", "ocr"], search="local")
    result = runtime.run("photo.jpg", "Who piloted this spacecraft first?")
    print(result.answer, len(result.trace.steps))
"""

from __future__ import annotations

from mmat_core.runtime.agent import MODES, AgentResult, AgentRuntime
from mmat_core.runtime.chat import ChatModel, OpenAIChatModel, TransformersChatModel, open_chat_model
from mmat_core.runtime.parsing import ParsedAnswer, ParsedStep, parse_answer, parse_step

__all__ = [
    "MODES",
    "AgentResult",
    "AgentRuntime",
    "ChatModel",
    "OpenAIChatModel",
    "ParsedAnswer",
    "ParsedStep",
    "TransformersChatModel",
    "open_chat_model",
    "parse_answer",
    "parse_step",
]
