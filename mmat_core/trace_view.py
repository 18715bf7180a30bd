"""The *view* of a stored Trace that formatters read: its JSON with only the keys RR, ORR and the
exports use.

Decoding a stored trace into these TypedDicts (with msgspec) yields plain dicts shaped exactly
like ``Trace.model_dump(mode="json")`` minus the keys listed nowhere here, so every function of
:mod:`mmat_core.formatting` works on it unchanged and writes the same bytes. A formatter that
declares ``accepts_dicts`` promises to read nothing outside this view.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ToolCallView(TypedDict, total=False):
    """What formatters read of a ToolCall."""

    name: str
    result: str
    error: str | None


class ImageView(TypedDict, total=False):
    """What formatters read of an ImageRef (all of it)."""

    sha256: str
    path: str | None
    width: int | None
    height: int | None
    format: str | None


class SampleView(TypedDict, total=False):
    """What formatters read of a SourceSample."""

    id: str
    source: str
    subset: str | None
    question: str
    answers: list[str]
    constraint: str
    images: list[ImageView]
    licence: str | None


class StepView(TypedDict, total=False):
    """What formatters read of a Step."""

    kind: str
    thought: str
    operators: list[str]
    rag_query: str | None
    signal: str
    tool_calls: list[ToolCallView]
    rag: dict[str, Any] | None
    observation: str


class TraceView(TypedDict, total=False):
    """What formatters read of a Trace."""

    schema_version: int
    id: str
    sample: SampleView
    tools: list[str]
    steps: list[StepView]
    final_prompt: str
    final_answer: str | None
    status: str
    provenance: dict[str, Any]
    usage: dict[str, Any]
