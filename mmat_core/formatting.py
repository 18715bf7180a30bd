"""RR and ORR views of a Trace, exactly in the released MMAT-1M layout (MMAT-SPEC.md, stage 4).

These functions are the single place the two formats are computed; the ``rr`` and ``orr``
formatter plugins, the exports, the importer, the viewer and the agent runtime all call them.

Every function accepts a :class:`~mmat_core.models.Trace` (or :class:`~mmat_core.models.Step`)
*or* the plain JSON dict the run store keeps for it. The work is done on the dict form: a model
is dumped once (``model_dump(mode="json")``), a stored trace is used as parsed. So the pipeline
(models) and the bulk re-export (dicts read without pydantic validation, many times faster)
share one implementation and produce the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from mmat_core import prompts
from mmat_core.components import ToolInfo
from mmat_core.models import Step, Trace

OPERATOR_SEPARATOR = ", "

#: Any tag of the RR/ORR format, as a tuned model's parser would read it (case-insensitive, with
#: stray spaces): ``<THOUGHT>``, ``</SIGNAL>``, ``<ANSWER>``, ``<|begin_api_invoke|>`` and the rest.
FORMAT_TAG = re.compile(
    r"<\s*/?\s*(?:THOUGHT|OPERATOR|RAG|SIGNAL|ANSWER)\s*>"
    r"|<\|\s*(?:begin|end)_(?:api_invoke|result_of_api)\s*\|>",
    re.IGNORECASE,
)
#: What a neutralised tag's angle brackets become (see :func:`neutralise_tags`).
NEUTRAL_OPEN, NEUTRAL_CLOSE = "\u2039", "\u203a"


def find_format_tag(text: str) -> str | None:
    """The first RR/ORR format tag in ``text``, or None when it holds none."""
    if "<" not in text:  # the usual case, and much cheaper than a search
        return None
    match = FORMAT_TAG.search(text)
    return match.group() if match else None


def neutralise_tags(text: str) -> str:
    """``text`` with every format tag's ``<`` and ``>`` replaced by ``‹`` and ``›``.

    For text from the world (tool and RAG results: an OCR of a slide that shows ``<ANSWER>``):
    it cannot be re-asked, and dropping the sample would lose good data. The reader still sees
    what the image says; no parser reads it as a tag. The same function runs at inference
    (the agent runtime calls the same tools), so a tuned model sees the form it was trained on.
    """
    if "<" not in text:
        return text
    return FORMAT_TAG.sub(lambda m: NEUTRAL_OPEN + m.group()[1:-1] + NEUTRAL_CLOSE, text)


class ForgedTagError(ValueError):
    """A text that must be plain holds a tag of the RR/ORR format."""

    def __init__(self, where: str, tag: str) -> None:
        super().__init__(f"{where} holds the format tag {tag!r}")
        self.where = where
        self.tag = tag


def _trace_texts(data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, text) for every free text a trace puts into RR or ORR."""
    sample = data["sample"]
    yield "question", sample.get("question") or ""
    yield "constraint", sample.get("constraint") or ""
    for number, step in enumerate(data.get("steps") or (), 1):
        yield f"step {number} thought", step.get("thought") or ""
        yield f"step {number} rag query", step.get("rag_query") or ""
        for name in step.get("operators") or ():
            yield f"step {number} operator name", name
        yield f"step {number} observation", step.get("observation") or ""
        for call in step.get("tool_calls") or ():
            yield f"step {number} {call.get('name', 'operator')} result", call.get("result") or ""
    yield "final prompt", data.get("final_prompt") or ""
    yield "final answer", data.get("final_answer") or ""
    # ORR joins the thoughts with a space, and FORMAT_TAG allows spaces inside a tag: a thought
    # ending in "<" and the next starting with "/ANSWER>" hold no tag alone but "< /ANSWER>" joined.
    if len(data.get("steps") or ()) > 1:
        yield "ORR thought", _orr_thought(data)


def check_trace_text(trace: TraceLike) -> None:
    """Raise :class:`ForgedTagError` when a text of the trace would forge a format tag in RR or ORR.

    The engine refuses such model text (re-ask) and quarantines such dataset text before any
    model call, and neutralises tool results; this is the last line of defence for traces that
    came another way (an import, a third-party plugin, a run of an older mmat).
    """
    for where, text in _trace_texts(trace_data(trace)):
        tag = find_format_tag(text)
        if tag is not None:
            raise ForgedTagError(where, tag)

#: A trace as a model or as its stored JSON dict.
TraceLike = Trace | Mapping[str, Any]
#: A step as a model or as its JSON dict.
StepLike = Step | Mapping[str, Any]


def trace_data(trace: TraceLike) -> Mapping[str, Any]:
    """The JSON dict of a trace: dumped from a model, or returned as given."""
    if isinstance(trace, BaseModel):
        return trace.model_dump(mode="json")
    return trace


def _step_data(step: StepLike) -> Mapping[str, Any]:
    if isinstance(step, BaseModel):
        return step.model_dump(mode="json")
    return step


def _step_text(step: Mapping[str, Any]) -> str:
    text = "<THOUGHT>" + step["thought"] + "</THOUGHT>"
    operators = step.get("operators")
    if operators:
        text += "<OPERATOR>" + OPERATOR_SEPARATOR.join(operators) + "</OPERATOR>"
    rag_query = step.get("rag_query")
    if rag_query:
        text += "<RAG>" + rag_query + "</RAG>"
    return text + "<SIGNAL>" + step.get("signal", "continue") + "</SIGNAL>"


def rr_step_text(step: StepLike) -> str:
    """One assistant step: ``<THOUGHT>`` always, ``<OPERATOR>`` and ``<RAG>`` only when used,
    then ``<SIGNAL>``."""
    if isinstance(step, Step):
        # The reflection critics call this per step during a run: skip the dump.
        return _step_text({"thought": step.thought, "operators": step.operators, "rag_query": step.rag_query,
                           "signal": step.signal})
    return _step_text(step)


def rr_system_prompt(tools: Sequence[ToolInfo], rag_enabled: bool = True) -> str:
    """The RR system prompt of a run (its operator list comes from the enabled tools)."""
    return prompts.rr_system(tools, rag_enabled)


def rr_messages(trace: TraceLike, tools: Sequence[ToolInfo], rag_enabled: bool = True, *,
                system: str | None = None) -> list[dict[str, str]]:
    """The multi-turn RR dialogue of a trace.

    ``system`` overrides the system prompt (formatters pass the run's prompt, computed once).
    """
    data = trace_data(trace)
    sample = data["sample"]
    question = sample["question"]
    messages = [
        {"role": "system", "content": system if system is not None else prompts.rr_system(tools, rag_enabled)},
        {"role": "user", "content": prompts.FIRST_TURN.format(question=question, constraint=sample.get("constraint", ""))},
    ]
    append = messages.append
    for step in data["steps"]:
        append({"role": "assistant", "content": _step_text(step)})
        if step.get("signal", "continue") != "end":
            append({"role": "user", "content": step.get("observation", "")})
    append({"role": "user", "content": data.get("final_prompt") or prompts.FINAL_TURN.format(question=question)})
    append({"role": "assistant", "content": data.get("final_answer") or ""})
    return messages


def orr_api_outputs(trace: TraceLike) -> list[tuple[str, str]]:
    """Operator outputs of the dialogue in the order they were produced; RAG and failed calls are
    left out (an ORR model cannot call them at run time)."""
    data = trace_data(trace)
    return [
        (call["name"], call.get("result", ""))
        for step in data["steps"]
        for call in step.get("tool_calls") or ()
        if call.get("error") is None
    ]


def orr_question(trace: TraceLike) -> str:
    """The ORR user turn: the question with the operator outputs appended."""
    data = trace_data(trace)
    sample = data["sample"]
    text = sample["question"] + sample.get("constraint", "")
    outputs = orr_api_outputs(data)
    if outputs:
        block = prompts.ORR_API_BLOCK
        text += prompts.ORR_API_HEADER + "".join(block.format(operator=name, result=result) for name, result in outputs)
    return text


def orr_answer(trace: TraceLike) -> str:
    """The ORR assistant turn: every thought (reflections included) joined into one ``<THOUGHT>``,
    then ``<ANSWER>The answer is: X</ANSWER>``."""
    data = trace_data(trace)
    return "<THOUGHT>" + _orr_thought(data) + "</THOUGHT>" + prompts.ORR_ANSWER.format(answer=data.get("final_answer") or "")


def _orr_thought(data: Mapping[str, Any]) -> str:
    """Every thought of the dialogue, stripped, joined by one space (the ORR ``<THOUGHT>``)."""
    return " ".join(t for t in (step["thought"].strip() for step in data["steps"]) if t)


def orr_messages(trace: TraceLike, *, system: str | None = None) -> list[dict[str, str]]:
    """The one-turn ORR dialogue of a trace."""
    data = trace_data(trace)
    return [
        {"role": "system", "content": system if system is not None else prompts.orr_system()},
        {"role": "user", "content": orr_question(data)},
        {"role": "assistant", "content": orr_answer(data)},
    ]


def image_paths(trace: TraceLike) -> list[str]:
    """Paths of the sample's images as written into training records (the hash when no path)."""
    data = trace_data(trace)
    return [image.get("path") or image["sha256"] for image in data["sample"].get("images") or ()]


def training_record(trace: TraceLike, messages: list[dict[str, str]]) -> dict[str, Any]:
    """The ``rr.jsonl`` / ``orr.jsonl`` line: id, messages, images, provenance."""
    data = trace_data(trace)
    record = {
        "id": data["id"],
        "messages": messages,
        "images": image_paths(data),
        "provenance": data["provenance"],
    }
    if data.get("status") == "flagged":
        # Kept under reflection.on_failure=keep_flagged although a critic was not satisfied:
        # say so in the record, so a trainer can leave such samples out.
        record["status"] = "flagged"
    return record


def view_messages(trace: TraceLike, view: str, tools: Sequence[ToolInfo], rag_enabled: bool = True, *,
                  system: str | None = None) -> list[dict[str, str]]:
    """The RR (``view="rr"``) or ORR (``view="orr"``) dialogue of a trace."""
    if view == "rr":
        return rr_messages(trace, tools, rag_enabled, system=system)
    if view == "orr":
        return orr_messages(trace, system=system)
    raise ValueError(f"unknown view {view!r}; allowed: rr, orr")
