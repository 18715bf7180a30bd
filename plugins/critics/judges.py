"""LLM-judge critics: ``general`` (cheating), ``math`` (skipped steps) and ``quality``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from mmat_core.components import ComponentOptions, Critic, CriticContext, LLMRequest, Message
from mmat_core.engine.reflection import dialogue_messages
from mmat_core.models import Trace, Verdict

GENERAL_VERSION = "critic-general-1"
GENERAL_PROMPT = """You review a step-by-step visual reasoning dialogue (shown above) for cheating.
Cheating means the reasoning does not really derive its conclusion: it jumps to an answer the
operators and observations do not support, or forces a match with a label it could not obtain.
If the dialogue cheats, reply {"reason": "<what is unsupported>"}; if it is sound, reply {}."""

MATH_VERSION = "critic-math-1"
MATH_PROMPT = """You review the calculation in a step-by-step reasoning dialogue (shown above).
Its last two reasoning rounds are:
{last_two}
Were calculation steps skipped between them? If so, reply
{{"reason": "<what was skipped>", "thought": "<the missing calculation, written out>"}};
otherwise reply {{"reason": "", "thought": "null"}}."""

QUALITY_VERSION = "critic-quality-1"
QUALITY_PROMPT = """Score the reasoning dialogue above for coherence, relevance, accuracy, completeness
and visual integration. Reply {"quality_score": <0.0-1.0, one decimal>, "scoring_reason": "<why>"}."""

MATH_SOURCES = {"tabmwp", "geoqa+", "geoqa", "clevr-math", "clevr_math", "inter-gps", "intergps"}


def _json_object(text: str) -> dict[str, Any]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return {}
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class JudgeOptions(ComponentOptions):
    """Options of an LLM judge."""

    enabled: bool = True


class GeneralCritic(Critic):
    """The paper's cheating judge: sees the dialogue without the answer."""

    name = "general"
    version = "1"
    description = "LLM judge: does the reasoning really derive its answer? (reflection on cheating)"
    order = 50
    Options = JudgeOptions

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        """Ask the judge; a non-empty reason means fix."""
        assert ctx.llm is not None
        messages = dialogue_messages(trace) + [Message(role="user", content=GENERAL_PROMPT)]
        request = LLMRequest(purpose="critic_general", messages=messages, prompt_version=GENERAL_VERSION,
                             sample_id=trace.id, context={"question": trace.sample.question})
        response, call = await ctx.llm.complete(request)
        reason = str(_json_object(response.text).get("reason") or "").strip()
        return Verdict(critic=self.name, verdict="fix" if reason else "pass", reason=reason, model_call=call)


class MathCritic(Critic):
    """The paper's step-skipping judge, for math-like sources."""

    name = "math"
    version = "1"
    description = "LLM judge: were calculation steps skipped in the last two rounds? (math sources)"
    order = 60
    Options = JudgeOptions

    def applies_to(self, trace: Trace) -> bool:
        """Math-like sources and sub-datasets, or samples tagged math."""
        sample = trace.sample
        names = {sample.source.lower(), (sample.subset or "").lower()}
        return bool(names & MATH_SOURCES) or "math" in sample.tags or sample.task_type == "math"

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        """Ask the judge about the last two rounds."""
        assert ctx.llm is not None
        rounds = [s.thought for s in trace.steps if s.kind == "rationale"][-2:]
        messages = dialogue_messages(trace) + [
            Message(role="user", content=MATH_PROMPT.format(last_two="\n".join(f"- {t}" for t in rounds)))
        ]
        request = LLMRequest(purpose="critic_math", messages=messages, prompt_version=MATH_VERSION,
                             sample_id=trace.id, context={"question": trace.sample.question})
        response, call = await ctx.llm.complete(request)
        data = _json_object(response.text)
        reason = str(data.get("reason") or "").strip()
        thought = data.get("thought")
        return Verdict(critic=self.name, verdict="fix" if reason else "pass", reason=reason,
                       data={"thought": thought} if reason else {}, model_call=call)


class QualityOptions(ComponentOptions):
    """Options of the quality judge."""

    threshold: float = Field(0.6, ge=0, le=1, description="samples scoring below are dropped")


class QualityCritic(Critic):
    """A VLM judge scoring the whole dialogue; below the threshold the sample is dropped."""

    name = "quality"
    version = "1"
    description = "LLM judge: quality score 0.0-1.0 with a keep threshold"
    order = 90
    Options = QualityOptions

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        """Score the dialogue."""
        assert ctx.llm is not None
        messages = dialogue_messages(trace) + [Message(role="user", content=QUALITY_PROMPT)]
        request = LLMRequest(purpose="critic_quality", messages=messages, prompt_version=QUALITY_VERSION,
                             sample_id=trace.id, context={"question": trace.sample.question})
        response, call = await ctx.llm.complete(request)
        data = _json_object(response.text)
        try:
            score = float(data.get("quality_score"))
        except (TypeError, ValueError):
            return Verdict(critic=self.name, verdict="reject", reason="the judge gave no quality_score", model_call=call)
        keep = score >= self.options.threshold
        return Verdict(critic=self.name, verdict="pass" if keep else "reject", score=score,
                       reason=str(data.get("scoring_reason", "")), model_call=call)
