"""A scripted judge on 127.0.0.1 for the critic tests.

The server is the project's fake OpenAI API (``tests.fakes.openai_server``), a real aiohttp
server on a real socket, called by the real ``openai`` backend plugin. :class:`JudgeScript` is its
responder: it recognises what each request is for from the prompt text (the general, math or
quality instruction, the correction request, a rationale step, the final question) and answers
from rules the test sets, per purpose and optionally per question. Every answer reports fixed
token counts, so the engine's pricing and the yield's cost columns are exercised too.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from mmat_core.engine.reflection import CORRECTION_REQUEST
from mmat_plugins.critics.judges import GENERAL_PROMPT, MATH_PROMPT, QUALITY_PROMPT, REPAIR_PROMPT
from tests.fakes.openai_server import RecordedRequest, Reply

#: Tokens the judge reports for every answer (so each call costs the same).
PROMPT_TOKENS, COMPLETION_TOKENS = 100, 10
#: The judge model's price: USD 100 per million tokens either way, so one call costs USD 0.011.
JUDGE_PRICE = {"input": 100.0, "output": 100.0}
CALL_COST = (PROMPT_TOKENS + COMPLETION_TOKENS) * 100.0 / 1_000_000

# Distinctive fragments of each prompt, taken from the prompts themselves.
MARKERS = (
    ("critic_general", GENERAL_PROMPT[:60]),
    ("critic_math", MATH_PROMPT[:60]),
    ("critic_quality", QUALITY_PROMPT[:60]),
    ("reflection_correction", CORRECTION_REQUEST.splitlines()[1][:20]),
    ("final_answer", "Based on the above information, please summarize"),
)
REPAIR_MARKER = REPAIR_PROMPT[:30]


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if part.get("type") == "text")


def purpose_of(body: dict[str, Any]) -> str:
    """What a request asks for, read from its last meaningful user message."""
    users = [_text(m) for m in body.get("messages", []) if m.get("role") == "user"]
    for text in reversed(users):
        if REPAIR_MARKER in text:
            continue  # a re-ask: the purpose is the instruction before it
        for purpose, marker in MARKERS:
            if marker in text:
                return purpose
        break
    return "rationale_step"


def first_user_text(body: dict[str, Any]) -> str:
    """The first user message (the question and its constraint)."""
    return next((_text(m) for m in body.get("messages", []) if m.get("role") == "user"), "")


def text(value: str | dict[str, Any]) -> Reply:
    """A 200 reply with fixed token counts; dicts are sent as JSON text."""
    body = value if isinstance(value, str) else json.dumps(value)
    return Reply.text(body, prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS)  # type: ignore[call-arg]


def step(thought: str, final: bool = False) -> str:
    """A rationale step as the generator writes it."""
    return json.dumps({"thought": thought, "operators": [], "rag": {"needed": False, "query": None},
                       "next_action": "final_answer" if final else "continue"})


class JudgeScript:
    """The fake server's responder: rules per purpose (and question), defaults for the rest.

    ``on(purpose, *replies, question=...)`` queues replies for requests of ``purpose`` whose first
    user turn contains ``question``; the last reply repeats once the others are used. Unscripted
    requests get: a two-step rationale, the answer from ``answers`` (by question fragment), a
    clean verdict from each judge, a quality score of 0.9 and a plain correction."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = answers or {}
        self.rules: list[tuple[str, str | None, deque[Reply]]] = []
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def on(self, purpose: str, *replies: str | dict[str, Any] | Reply, question: str | None = None) -> JudgeScript:
        """Script ``replies`` for ``purpose`` (optionally only for questions containing ``question``)."""
        queue = deque(r if isinstance(r, Reply) else text(r) for r in replies)
        self.rules.append((purpose, question, queue))
        return self

    def requests(self, purpose: str) -> list[dict[str, Any]]:
        """Bodies of the requests seen for ``purpose``, in order."""
        return [body for p, body in self.seen if p == purpose]

    def __call__(self, request: RecordedRequest) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        purpose = purpose_of(body)
        self.seen.append((purpose, body))
        question = first_user_text(body)
        for rule_purpose, fragment, queue in self.rules:
            if rule_purpose == purpose and (fragment is None or fragment in question):
                return queue.popleft() if len(queue) > 1 else queue[0]
        return self.default(purpose, body, question)

    def default(self, purpose: str, body: dict[str, Any], question: str) -> Reply:
        """The unscripted answer of each purpose."""
        if purpose == "rationale_step":
            turn = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
            if turn == 0:
                return text(step("The table lists the values; I will read the relevant rows."))
            return text(step("Reading the rows and comparing them gives the result.", final=True))
        if purpose == "final_answer":
            for fragment, answer in self.answers.items():
                if fragment in question:
                    return text(answer)
            return Reply.status(400, f"unscripted final answer for {question[:60]!r}")
        if purpose == "critic_general":
            return text({})
        if purpose == "critic_math":
            return text({"reason": "", "thought": "null"})
        if purpose == "critic_quality":
            return text({"quality_score": 0.9, "scoring_reason": "clear and grounded"})
        return text("Re-reading the observations: the values above lead to the result step by step.")
