"""LLM-judge critics: ``general`` (cheating), ``math`` (skipped steps) and ``quality``.

All three send the dialogue (never the final question or answer) and an instruction in the
project's own words, and read one JSON object back in the paper's shapes:

* general: ``{"reason": "..."}`` when the reasoning cheats, ``{}`` when it is sound;
* math: ``{"reason": "...", "thought": "<supplementary reasoning>" | "null"}``;
* quality: ``{"quality_score": 0.0-1.0, "scoring_reason": "..."}``.

A reply that is not such an object is re-asked (``repair_attempts``); if it stays unreadable the
verdict follows ``on_malformed`` (reject by default: an unjudged sample is not a clean one).
Model-call failures propagate, and the stage marks the sample failed with the reason.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from mmat_core.components import ComponentOptions, Critic, CriticContext, LLMRequest, Message
from mmat_core.construct import construct
from mmat_core.dialogue import dialogue_messages
from mmat_core.errors import MmatError
from mmat_core.models import ModelCall, Trace, Usage, Verdict
from mmat_core.replies import ReplyJSONError, extract_json_object

# Each instruction is the exact text the judge reads: a line break only where the text means one
# (between the task and each reply it allows, around a block inserted from the dialogue), never from
# the width of this source file. tests/formats/test_prompt_text.py fails on a break inside a sentence.
GENERAL_VERSION = "critic-general-3"
GENERAL_PROMPT = (
    "Above is a step-by-step visual reasoning dialogue. Review it for cheating. Cheating means the reasoning does not "
    "really derive its conclusion: it asserts a result that the operator outputs, search results and visible "
    "evidence do not support, or it bends the evidence to fit an answer it could not actually obtain. Judge only "
    "whether each conclusion follows from what the dialogue shows.\n"
    'If the dialogue cheats, reply with {"reason": "<which conclusion is unsupported and why>"}.\n'
    "If it is sound, reply with {}. Reply with the JSON object only."
)

MATH_VERSION = "critic-math-3"
MATH_PROMPT = (
    "Above is a step-by-step reasoning dialogue that involves calculation. Its last two reasoning rounds are:\n"
    "{last_two}\n"
    "Check whether calculation steps were skipped between these two rounds: a result stated without the "
    "arithmetic, lookup or formula that produces it.\n"
    'If steps were skipped, reply with {{"reason": "<what was skipped>", "thought": "<the missing calculation, '
    'written out step by step>"}} (use "null" for thought if you cannot supply it).\n'
    'If nothing was skipped, reply with {{"reason": "", "thought": "null"}}. Reply with the JSON object only.'
)

QUALITY_VERSION = "critic-quality-3"
QUALITY_PROMPT = (
    "Above are an image and a step-by-step reasoning dialogue about it. Score the dialogue as training data on five "
    "criteria: coherence (each step follows from the previous), relevance (the steps serve the question), accuracy "
    "(statements agree with the image and the operator outputs), completeness (nothing needed is missing) and "
    "visual integration (the reasoning uses what the image shows).\n"
    'Reply with {"quality_score": <a number from 0.0 to 1.0 with one decimal>, "scoring_reason": "<one or two '
    'sentences>"} and nothing else.'
)

REPAIR_PROMPT = "Your reply could not be read: {error}. Reply again with exactly one JSON object in the requested form."

#: Source and sub-dataset names (lower case, letters and digits only) the math critic reviews.
MATH_SOURCES = frozenset({"tabmwp", "geoqa", "geoqaplus", "clevrmath", "intergps", "geometry3k", "mathvista", "mathverse"})


class MalformedJudgement(MmatError, ValueError):
    """A judge reply that is not the JSON object asked for."""


def parse_judgement(text: str) -> dict[str, Any]:
    """The JSON object in a judge's reply (code fences and text around it tolerated)."""
    try:
        return extract_json_object(text)
    except ReplyJSONError as exc:
        raise MalformedJudgement(str(exc)) from None


def _name_key(name: str | None) -> str:
    return re.sub(r"[^0-9a-z]+", "", (name or "").lower().replace("+", "plus"))


class JudgeOptions(ComponentOptions):
    """Options shared by the LLM judges."""

    repair_attempts: int = Field(1, ge=0, le=5, description="re-asks of a reply that is not the JSON asked for")
    on_malformed: Literal["reject", "pass"] = Field("reject", description="verdict when the reply stays unreadable")
    temperature: float | None = Field(0.0, ge=0, le=2, description="sampling temperature of the judge")
    max_tokens: int | None = Field(512, ge=1, description="reply length limit")
    with_image: bool = Field(False, description="send the sample's images with the dialogue (for a VLM judge)")


class JudgeCritic(Critic):
    """Common machinery: build the request, call the judge, re-ask on unreadable replies."""

    purpose: ClassVar[str] = ""
    prompt_version: ClassVar[str] = ""
    Options = JudgeOptions

    def instruction(self, trace: Trace) -> str:
        """The judge's instruction, appended after the dialogue."""
        raise NotImplementedError

    def check(self, data: dict[str, Any]) -> None:
        """Raise MalformedJudgement when ``data`` lacks what this judge must answer."""

    def verdict(self, data: dict[str, Any], trace: Trace, ctx: CriticContext) -> Verdict:
        """Turn the judge's JSON object into a verdict."""
        raise NotImplementedError

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        """Ask the judge; re-ask on an unreadable reply; return the verdict."""
        if ctx.llm is None:
            raise RuntimeError(f"the {self.name} critic needs an LLM backend; configure `llm:`")
        messages = dialogue_messages(trace, with_images=self.options.with_image)
        messages.append(Message(role="user", content=self.instruction(trace)))
        total = Usage()
        call: ModelCall | None = None
        error = ""
        for attempt in range(self.options.repair_attempts + 1):
            # Built without validation (every value is of its field's type); the list is copied
            # as validation did.
            request = construct(
                LLMRequest, purpose=self.purpose, messages=list(messages), prompt_version=self.prompt_version,
                temperature=self.options.temperature, max_tokens=self.options.max_tokens, sample_id=trace.id,
                context={"question": trace.sample.question, "critic": self.name, "round": ctx.round, "repair": attempt},
            )
            response, call = await ctx.llm.complete(request)
            total.add(call.usage)
            try:
                data = parse_judgement(response.text)
                self.check(data)
            except MalformedJudgement as exc:
                error = str(exc)
                messages = messages + [Message(role="assistant", content=response.text or "(empty)"),
                                       Message(role="user", content=REPAIR_PROMPT.format(error=error))]
                continue
            verdict = self.verdict(data, trace, ctx)
            verdict.model_call = call.model_copy(update={"usage": total, "attempts": attempt + 1})
            return verdict
        assert call is not None
        verdict_kind = self.options.on_malformed
        return Verdict(critic=self.name, verdict=verdict_kind, reason=f"judge_malformed: {error}",
                       data={"malformed": True}, model_call=call.model_copy(update={"usage": total}))


class GeneralCritic(JudgeCritic):
    """The paper's cheating judge: sees the dialogue without the answer."""

    name = "general"
    version = "3"
    description = "LLM judge: does the reasoning really derive its answer? (reflection on cheating)"
    order = 50
    purpose = "critic_general"
    prompt_version = GENERAL_VERSION

    def instruction(self, trace: Trace) -> str:
        """The cheating question."""
        return GENERAL_PROMPT

    def check(self, data: dict[str, Any]) -> None:
        """``{}`` or ``{"reason": str|null}``."""
        if data.get("reason") is not None and not isinstance(data["reason"], str):
            raise MalformedJudgement('"reason" must be a string')

    def verdict(self, data: dict[str, Any], trace: Trace, ctx: CriticContext) -> Verdict:
        """A non-empty reason means fix."""
        reason = (data.get("reason") or "").strip()
        return Verdict(critic=self.name, verdict="fix" if reason else "pass", reason=reason)


class MathOptions(JudgeOptions):
    """Options of the math judge."""

    sources: list[str] = Field(default_factory=list, description="more source or sub-dataset names to review")
    all_samples: bool = Field(False, description="review every sample, not only math-like ones")


class MathCritic(JudgeCritic):
    """The paper's step-skipping judge, for math-like sources."""

    name = "math"
    version = "3"
    description = "LLM judge: were calculation steps skipped in the last two rounds? (math sources)"
    order = 60
    purpose = "critic_math"
    prompt_version = MATH_VERSION
    Options = MathOptions

    def applies_to(self, trace: Trace) -> bool:
        """TabMWP, GeoQA+, CLEVR-Math, Inter-GPS (and configured names), task type math, or tag math."""
        if self.options.all_samples:
            return True
        sample = trace.sample
        wanted = MATH_SOURCES | {_name_key(name) for name in self.options.sources}
        names = {_name_key(sample.source), _name_key(sample.subset)}
        return bool(names & wanted) or sample.task_type == "math" or "math" in sample.tags

    def instruction(self, trace: Trace) -> str:
        """The step-skipping question over the last two reasoning rounds."""
        rounds = [s.thought for s in trace.steps if s.kind != "reflection"][-2:]
        return MATH_PROMPT.format(last_two="\n".join(f"- {thought}" for thought in rounds))

    def check(self, data: dict[str, Any]) -> None:
        """``reason`` a string (or absent/null), ``thought`` a string or null."""
        if data.get("reason") is not None and not isinstance(data["reason"], str):
            raise MalformedJudgement('"reason" must be a string')
        if data.get("thought") is not None and not isinstance(data["thought"], str):
            raise MalformedJudgement('"thought" must be a string or "null"')

    def verdict(self, data: dict[str, Any], trace: Trace, ctx: CriticContext) -> Verdict:
        """A non-empty reason means fix; the supplementary thought travels in ``data``."""
        reason = (data.get("reason") or "").strip()
        thought = data.get("thought")
        return Verdict(critic=self.name, verdict="fix" if reason else "pass", reason=reason,
                       data={"thought": thought if isinstance(thought, str) else "null"} if reason else {})


class QualityOptions(JudgeOptions):
    """Options of the quality judge."""

    threshold: float | None = Field(None, ge=0, le=1, description="keep at or above; default reflection.quality_threshold")
    with_image: bool = Field(True, description="send the sample's images (the paper's scorer is a VLM)")


class QualityCritic(JudgeCritic):
    """A VLM judge scoring the whole dialogue; below the threshold the sample is rejected."""

    name = "quality"
    version = "3"
    description = "VLM judge: quality score 0.0-1.0 with a keep threshold"
    order = 90
    purpose = "critic_quality"
    prompt_version = QUALITY_VERSION
    Options = QualityOptions
    #: The threshold when neither the option nor the run's reflection settings give one.
    default_threshold: ClassVar[float] = 0.6

    def instruction(self, trace: Trace) -> str:
        """The scoring request."""
        return QUALITY_PROMPT

    def check(self, data: dict[str, Any]) -> None:
        """``quality_score`` a number in [0, 1]."""
        score = data.get("quality_score")
        if isinstance(score, str):
            try:
                score = float(score)
            except ValueError:
                raise MalformedJudgement('"quality_score" must be a number') from None
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise MalformedJudgement('"quality_score" is missing or not a number')
        if not 0.0 <= float(score) <= 1.0:
            raise MalformedJudgement(f'"quality_score" {score} is outside 0.0-1.0')

    def threshold(self, ctx: CriticContext | None) -> float:
        """The keep threshold: the option, else the run's ``reflection.quality_threshold``."""
        if self.options.threshold is not None:
            return self.options.threshold
        if ctx is None or ctx.settings is None:
            return self.default_threshold
        return float(ctx.settings.quality_threshold)

    def verdict(self, data: dict[str, Any], trace: Trace, ctx: CriticContext) -> Verdict:
        """Pass at or above the threshold, reject below it."""
        score = round(float(data["quality_score"]), 4)
        threshold = self.threshold(ctx)
        reason = str(data.get("scoring_reason") or "")
        keep = score >= threshold
        return Verdict(critic=self.name, verdict="pass" if keep else "reject",
                       reason=reason if keep else f"quality score {score} below {threshold}: {reason}",
                       score=score, data={"scoring_reason": reason, "threshold": threshold})
