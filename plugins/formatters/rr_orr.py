"""The RR (multi-turn) and ORR (one-turn) formatters, exact to the released MMAT-1M layout."""

from __future__ import annotations

from typing import Any

from mmat_core.components import ComponentOptions, FormatContext, RecordFormatter
from mmat_core.formatting import orr_messages, rr_messages, training_record
from mmat_core.models import Trace


class JsonlOptions(ComponentOptions):
    """Options shared by the JSONL formatters."""

    file: str | None = None


class RRFormatter(RecordFormatter):
    """Multi-turn Rationale and Reflection records (``rr.jsonl``)."""

    name = "rr"
    version = "1"
    description = "multi-turn RR dialogues: <THOUGHT>/<OPERATOR>/<RAG>/<SIGNAL> steps, tool results in user turns"
    default_file = "rr.jsonl"
    Options = JsonlOptions

    def record(self, trace: Trace, ctx: FormatContext) -> dict[str, Any] | None:
        """One RR record."""
        return training_record(trace, rr_messages(trace, ctx.tools, ctx.rag_enabled))


class ORRFormatter(RecordFormatter):
    """One-turn records: operator outputs prepended, thoughts joined (``orr.jsonl``)."""

    name = "orr"
    version = "1"
    description = "one-turn ORR records: API outputs prepended to the question, <THOUGHT> and <ANSWER>"
    default_file = "orr.jsonl"
    Options = JsonlOptions

    def record(self, trace: Trace, ctx: FormatContext) -> dict[str, Any] | None:
        """One ORR record."""
        return training_record(trace, orr_messages(trace))
