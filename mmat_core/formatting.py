"""RR and ORR views of a Trace, exactly in the released MMAT-1M layout (MMAT-SPEC.md, stage 4).

These functions are the single place the two formats are computed; the ``rr`` and ``orr``
formatter plugins, the exports, the viewer and the agent runtime all call them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmat_core import prompts
from mmat_core.components import ToolInfo
from mmat_core.models import Step, Trace

OPERATOR_SEPARATOR = ", "


def rr_step_text(step: Step) -> str:
    """One assistant step: ``<THOUGHT>`` always, ``<OPERATOR>`` and ``<RAG>`` only when used,
    then ``<SIGNAL>``."""
    text = f"<THOUGHT>{step.thought}</THOUGHT>"
    if step.operators:
        text += f"<OPERATOR>{OPERATOR_SEPARATOR.join(step.operators)}</OPERATOR>"
    if step.rag_query:
        text += f"<RAG>{step.rag_query}</RAG>"
    return text + f"<SIGNAL>{step.signal}</SIGNAL>"


def rr_messages(trace: Trace, tools: Sequence[ToolInfo], rag_enabled: bool = True) -> list[dict[str, str]]:
    """The multi-turn RR dialogue of a trace."""
    sample = trace.sample
    messages = [
        {"role": "system", "content": prompts.rr_system(tools, rag_enabled)},
        {"role": "user", "content": prompts.first_turn(sample.question, sample.constraint)},
    ]
    for step in trace.steps:
        messages.append({"role": "assistant", "content": rr_step_text(step)})
        if step.signal != "end":
            messages.append({"role": "user", "content": step.observation})
    messages.append({"role": "user", "content": trace.final_prompt or prompts.final_turn(sample.question)})
    messages.append({"role": "assistant", "content": trace.final_answer or ""})
    return messages


def orr_api_outputs(trace: Trace) -> list[tuple[str, str]]:
    """Operator outputs of the dialogue in the order they were produced; RAG and failed calls are
    left out (an ORR model cannot call them at run time)."""
    outputs: list[tuple[str, str]] = []
    for step in trace.steps:
        for call in step.tool_calls:
            if call.error is None:
                outputs.append((call.name, call.result))
    return outputs


def orr_question(trace: Trace) -> str:
    """The ORR user turn: the question with the operator outputs appended."""
    sample = trace.sample
    text = f"{sample.question}{sample.constraint}"
    outputs = orr_api_outputs(trace)
    if outputs:
        text += prompts.ORR_API_HEADER + "".join(
            prompts.ORR_API_BLOCK.format(operator=name, result=result) for name, result in outputs
        )
    return text


def orr_answer(trace: Trace) -> str:
    """The ORR assistant turn: every thought joined into one ``<THOUGHT>``, then ``<ANSWER>``."""
    thoughts = " ".join(step.thought.strip() for step in trace.steps if step.thought.strip())
    return f"<THOUGHT>{thoughts}</THOUGHT>" + prompts.ORR_ANSWER.format(answer=trace.final_answer or "")


def orr_messages(trace: Trace) -> list[dict[str, str]]:
    """The one-turn ORR dialogue of a trace."""
    return [
        {"role": "system", "content": prompts.orr_system()},
        {"role": "user", "content": orr_question(trace)},
        {"role": "assistant", "content": orr_answer(trace)},
    ]


def image_paths(trace: Trace) -> list[str]:
    """Paths of the sample's images as written into training records."""
    return [image.path or image.sha256 for image in trace.sample.images]


def training_record(trace: Trace, messages: list[dict[str, str]]) -> dict[str, Any]:
    """The ``rr.jsonl`` / ``orr.jsonl`` line: id, messages, images, provenance."""
    return {
        "id": trace.id,
        "messages": messages,
        "images": image_paths(trace),
        "provenance": trace.provenance.model_dump(mode="json"),
    }
