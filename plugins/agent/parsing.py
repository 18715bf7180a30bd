"""Reading a tuned model's replies: RR steps and ORR answers.

A tuned model is a small model: it may drop a closing tag, pad with spaces, write an operator as
``face detection`` instead of ``face_detection`` or forget ``<SIGNAL>``. The parser accepts all of
that and says what it repaired, rather than failing the whole run.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from mmat_core.models import Signal

_TAGS = ("THOUGHT", "OPERATOR", "RAG", "SIGNAL", "ANSWER")
_ANSWER_PREFIX = re.compile(r"^\s*the answer is\s*:?\s*", re.IGNORECASE)
_SPLIT_OPERATORS = re.compile(r"[,;\n]+")
_ANY_TAG = re.compile(r"</?(?:{})>".format("|".join(_TAGS)))


class ParsedStep(BaseModel):
    """One assistant step of an RR model."""

    thought: str = ""
    operators: list[str] = Field(default_factory=list)
    rag_query: str | None = None
    signal: Signal = "continue"
    repairs: list[str] = Field(default_factory=list, description="what the parser had to assume, e.g. missing_signal")


class ParsedAnswer(BaseModel):
    """The reply of an ORR model (or any one-turn reply)."""

    thought: str = ""
    answer: str
    format: Literal["orr", "bare"] = Field(description="orr: <ANSWER> was found; bare: the reply was taken as the answer")


def tag_text(text: str, tag: str) -> str | None:
    """The content of ``<TAG>...</TAG>``; a missing closing tag runs to the next tag or the end."""
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL | re.IGNORECASE)
    if match:
        return match.group(1).strip()
    match = re.search(rf"<{tag}>(.*?)(?=<(?:{'|'.join(_TAGS)})>|$)", text, re.DOTALL | re.IGNORECASE)
    return match.group(1).strip() if match else None


def operator_names(text: str) -> list[str]:
    """Names in an ``<OPERATOR>`` tag, in order, without repeats: ``face detection`` -> ``face_detection``."""
    names = []
    for part in _SPLIT_OPERATORS.split(text):
        name = re.sub(r"\s+", "_", part.strip().strip("'\"`").lower())
        if name and name not in names:
            names.append(name)
    return names


def parse_step(text: str) -> ParsedStep:
    """Parse one RR step. Without ``<SIGNAL>``, a step that asks for tools continues and one that
    does not ends (there is nothing to wait for)."""
    step = ParsedStep()
    thought = tag_text(text, "THOUGHT")
    if thought is None:
        # No tags at all: the whole reply is the thought (minus any tags it does have).
        thought = _ANY_TAG.sub("", text).strip()
        step.repairs.append("missing_thought")
    step.thought = thought
    operators = tag_text(text, "OPERATOR")
    if operators:
        step.operators = [name for name in operator_names(operators) if name not in ("none", "null")]
    rag = tag_text(text, "RAG")
    if rag and rag.lower() not in ("none", "null"):
        step.rag_query = rag
    signal = (tag_text(text, "SIGNAL") or "").lower()
    if signal in ("continue", "end", "reflection"):
        step.signal = signal  # type: ignore[assignment]
    else:
        step.signal = "continue" if (step.operators or step.rag_query) else "end"
        step.repairs.append("missing_signal" if not signal else f"unknown_signal:{signal}")
    return step


def parse_answer(text: str) -> ParsedAnswer:
    """Parse an ORR reply ``<THOUGHT>..</THOUGHT><ANSWER>The answer is: X</ANSWER>``; any other
    reply is taken whole as the answer."""
    answer = tag_text(text, "ANSWER")
    thought = tag_text(text, "THOUGHT") or ""
    if answer is None:
        return ParsedAnswer(thought=thought, answer=_ANSWER_PREFIX.sub("", text.strip()).strip(), format="bare")
    return ParsedAnswer(thought=thought, answer=_ANSWER_PREFIX.sub("", answer).strip(), format="orr")


def clean_final_answer(text: str) -> str:
    """The RR model's last reply as an answer: tags and a leading "The answer is:" removed."""
    parsed = tag_text(text, "ANSWER")
    body = parsed if parsed is not None else _ANY_TAG.sub(" ", text)
    return _ANSWER_PREFIX.sub("", body.strip()).strip()
