"""``--backend offline``: a deterministic stand-in for a tuned model, so the agent runs with no model.

It is no model: it follows the RR and ORR protocols by rule, which lets ``mmat serve`` and ``mmat
infer`` be tried (and tested) on any machine. In RR mode it asks for the first enabled operator
among ``ocr``, ``face_detection`` and ``image_caption`` (in that order), then ends; its answer
quotes what that operator returned, so every answer shows the real tools at work. In ORR mode it
answers from the operator outputs in the question; plain, it answers ``unknown``. The model name
it reports is ``offline``; nobody should mistake its text for a model's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from mmat_plugins.agent.chat import ChatTurn

from mmat_core import prompts

#: Operators it asks for, in order of preference.
PREFERRED = ("ocr", "face_detection", "image_caption")
_OPERATOR_LINE = re.compile(r"^- ([A-Za-z0-9_]+)(?::|$)", re.MULTILINE)
_RESULT = re.compile(r"<\|begin_result_of_api\|>(.*?)<\|end_result_of_api\|>", re.DOTALL)
_OBSERVED = re.compile(r"^Here are [^:]+ results from the previous step: (.*?)(?: Please continue your reasoning\.)?$", re.DOTALL)
UNKNOWN = "unknown"


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OfflineChatModel:
    """The rule-following stand-in (see the module docstring); a :class:`~mmat_plugins.agent.chat.ChatModel`."""

    name = "offline"

    async def generate(self, messages: Sequence[ChatTurn], images: Sequence[Path]) -> str:
        """The protocol's next reply for the dialogue."""
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if "Build a scene graph" in last_user:  # image_caption's first request
            return '{"objects": ["object"], "attributes": [], "relationships": []}'
        if "Using this scene graph" in last_user:  # image_caption's second request
            return "An image (described by the offline stand-in, which sees no pixels)."
        if system == prompts.orr_system():
            results = [_clip(r) for r in _RESULT.findall(last_user) if r.strip()]
            answer = results[0] if results else UNKNOWN
            return f"<THOUGHT>The operator outputs say: {'; '.join(results) or 'nothing'}.</THOUGHT>" \
                   f"<ANSWER>The answer is: {answer}</ANSWER>"
        if not system:
            return UNKNOWN
        if last_user.startswith(prompts.FINAL_TURN.split("{")[0]):
            return self._answer(messages)
        turn = sum(1 for m in messages if m["role"] == "assistant")
        enabled = _OPERATOR_LINE.findall(system)
        wanted = next((name for name in PREFERRED if name in enabled), enabled[0] if enabled else None)
        if turn == 0 and wanted:
            return f"<THOUGHT>I will call {wanted} on the image.</THOUGHT><OPERATOR>{wanted}</OPERATOR><SIGNAL>continue</SIGNAL>"
        return "<THOUGHT>The observations are all I can use, so I stop here.</THOUGHT><SIGNAL>end</SIGNAL>"

    @staticmethod
    def _answer(messages: Sequence[ChatTurn]) -> str:
        """The first observation's result text, or ``unknown``."""
        for message in messages[2:]:
            if message["role"] != "user":
                continue
            match = _OBSERVED.match(message["content"].strip())
            if match and match.group(1).strip():
                return _clip(match.group(1))
        return UNKNOWN

    async def aclose(self) -> None:
        """Nothing to release."""
