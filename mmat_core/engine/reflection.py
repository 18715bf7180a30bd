"""Stage 3: run the critics over a finished Trace, splice in reflections, apply the policy.

A critic answering ``fix`` gets a reflection spliced in before the final question, exactly in the
released data's shape (MMAT-SPEC.md, stage 3)::

    assistant  <THOUGHT>{a short, varied re-check sentence}</THOUGHT><SIGNAL>reflection</SIGNAL>
    user       No additional operator or rag results were selected in the previous step. Please make a reflection.
    assistant  <THOUGHT>{corrected or supplementary reasoning}</THOUGHT><SIGNAL>end</SIGNAL>

The step that used to end the reasoning becomes ``continue`` and is answered with the no-tool
turn, so user and assistant turns still alternate. The corrected thought is the critic's own
supplementary reasoning when it gives one (the math critic does); otherwise the generator writes
it, given the critic's reason.

The policy (``reflection`` in the config): each critic may trigger up to ``max_rounds``
reflections; with ``recheck`` the critic reviews the corrected dialogue again. A sample that a
critic rejects, or whose defect outlives its rounds, is failing, and ``on_failure`` decides:
``drop`` it, keep it ``keep_flagged``, or ``regenerate`` the rationale from scratch (up to
``regenerate_attempts`` times, then ``after_regenerate``). Critics run in ``order`` and review
stops at the first failing one.

A corrected thought is model text and passes the rationale loop's checks
(:func:`~mmat_core.engine.rationale.check_model_text`: no format tag, no control character,
within the thought's length cap). A generator's correction that fails them is re-asked (noted as
``step_repair: reflection ...``); a critic's own supplementary thought that fails them is set
aside for one the generator writes. When the re-asks run out, the failure's head is the check's
reason (``forged_tag``, ...), and ``on_failure`` applies.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmat_core import prompts
from mmat_core.components import Critic, CriticContext, LLMClient, LLMRequest, LLMResponse, Message
from mmat_core.dialogue import dialogue_messages  # re-exported: first defined here
from mmat_core.engine.settings import ReflectionSettings
from mmat_core.engine.errors import LLMCallError
from mmat_core.errors import MmatError
from mmat_core.models import ModelCall, Step, Trace, Verdict
from mmat_core.trace_queries import REGENERATED_NOTE, attempt_of, reflected_by, reflection_count
# Re-exported for the callers that imported them from here before they moved below the engine.
from mmat_core.trace_queries import attempt_of_notes, current_verdicts  # noqa: F401

from mmat_core.engine.rationale import StepParseError, TextLimits, check_model_text

if TYPE_CHECKING:
    from mmat_core.engine.rationale import RationaleLoop

#: Varied "let me re-check" thoughts; one is picked per sample and round, deterministically.
RECHECK_THOUGHTS = (
    "Wait, let me re-check this before answering.",
    "Hold on, let me verify the reasoning so far.",
    "Let me double-check this step before concluding.",
    "Wait a moment, I should re-examine that.",
    "Let me pause and check whether this really follows.",
    "Before I answer, let me re-check the evidence.",
    "Hmm, let me go over that again to be sure.",
    "Wait, I should confirm this against what the image shows.",
    "Let me look back at the steps above and check them.",
    "Hold on, I need to verify this conclusion first.",
)

CORRECTION_PROMPT_VERSION = "correct-3"
# The exact text the generator reads: a line break only where the text means one (after the known
# answer, between the parts of the request), never from the width of this source file.
# tests/formats/test_prompt_text.py fails on a break inside a sentence.
CORRECTION_SYSTEM = (
    "You wrote the step-by-step visual reasoning shown in this dialogue. You know, for your eyes only, that the "
    "correct answer is: {answer}\n"
    "A reviewer has found a problem in the reasoning. Write the next reasoning step: a correction or supplement that "
    "fixes the problem by deriving the result from the image and the observations in the dialogue, writing out any "
    "calculation in full. Do not mention the reviewer, and never state or use the known answer as a given."
)
CORRECTION_REQUEST = (
    "{reflection_turn}\n"
    "(Reviewer's finding, for you only: {reason})\n"
    "Reply with the reasoning alone, as plain text: no JSON, no tags."
)
CORRECTION_REPAIR = "Your last reply cannot be used: {error}. Reply again with the reasoning alone, as plain text."

#: The envelope a generator may copy from the dialogue around its correction; only this outer
#: layer is removed, any tag inside is refused.
_ENVELOPE = re.compile(r"^\s*<THOUGHT>(.*?)</THOUGHT>\s*(?:<SIGNAL>[a-z]*</SIGNAL>)?\s*$", re.IGNORECASE | re.DOTALL)

#: What the pipeline hands the stage to regenerate a sample: reset ``trace`` and run stage 2 again.
Regenerate = Callable[[Trace, int], Awaitable[None]]


@dataclass
class ReflectionContext(CriticContext):
    """The critic context of this stage: adds the run's reflection settings (the quality critic
    takes its default threshold from them)."""

    settings: ReflectionSettings | None = None


def recheck_thought(trace: Trace, round_: int) -> str:
    """A varied, deterministic "let me re-check" sentence for this sample and round."""
    digest = hashlib.sha256(f"{trace.id}:{round_}".encode()).digest()
    return RECHECK_THOUGHTS[digest[0] % len(RECHECK_THOUGHTS)]


def splice(trace: Trace, corrected: str, round_: int) -> None:
    """Insert a reflection and the corrected thought at the end of the reasoning (before the final
    question): the ending step becomes ``continue`` with the no-tool turn, then the re-check
    thought (``reflection``), the reflection turn, and the corrected thought (``end``)."""
    if trace.steps and trace.steps[-1].signal == "end":
        last = trace.steps[-1]
        last.signal = "continue"
        last.observation = prompts.NO_TOOL
    trace.steps.append(
        Step(kind="reflection", thought=recheck_thought(trace, round_), signal="reflection",
             observation=prompts.REFLECTION_TURN)
    )
    trace.steps.append(Step(kind="correction", thought=corrected, signal="end"))


def clean_correction(text: str) -> str:
    """The corrected thought from a generator's reply: a JSON step's ``thought``, or the text
    with an outer ``<THOUGHT>..</THOUGHT><SIGNAL>..</SIGNAL>`` envelope removed and its
    whitespace collapsed. Tags inside are kept, for :func:`check_model_text` to refuse."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("thought"), str):
            return data["thought"].strip()
    envelope = _ENVELOPE.match(text)
    return " ".join((envelope.group(1) if envelope else text).split())


def supplied_thought(verdict: Verdict) -> str | None:
    """The critic's own supplementary reasoning, when it gave one (``"null"`` means none)."""
    supplied = verdict.data.get("thought")
    if isinstance(supplied, str) and supplied.strip() and supplied.strip().lower() not in ("null", "none"):
        return supplied.strip()
    return None


class CriticError(MmatError):
    """A critic plugin raised something other than a model-call error (a bug in the plugin)."""

    def __init__(self, critic: str, error: Exception) -> None:
        super().__init__(f"{critic}: {type(error).__name__}: {error}")
        self.critic = critic


class ReflectionStage:
    """Runs critics in order over a finished trace and applies the reflection policy."""

    def __init__(self, critics: list[Critic], client: LLMClient | None, images: object,
                 settings: ReflectionSettings | None = None, *, regenerate: Regenerate | None = None,
                 limits: TextLimits | None = None, repair_attempts: int = 2) -> None:
        self.critics = sorted(critics, key=lambda c: (c.order, c.name))
        self.client = client
        self.images = images
        self.settings = settings or ReflectionSettings()
        self.regenerate = regenerate
        self.limits = limits or TextLimits()
        self.repair_attempts = repair_attempts

    async def corrected_thought(self, trace: Trace, verdict: Verdict, round_: int) -> str:
        """The critic's supplementary thought, or one written by the generator given the reason.

        Raises :class:`StepParseError` when the generator's corrections stay refused."""
        supplied = supplied_thought(verdict)
        if supplied is not None:
            try:
                check_model_text(supplied, "thought", self.limits.thought)
                return supplied
            except StepParseError as exc:
                trace.notes.append(f"reflection: {verdict.critic}'s own thought set aside: {exc}")
        if self.client is None:
            return ""
        sample = trace.sample
        messages = [Message(role="system", content=CORRECTION_SYSTEM.format(answer=sample.answer))]
        messages += dialogue_messages(trace, with_images=True)
        recheck = Step(kind="reflection", thought=recheck_thought(trace, round_), signal="reflection")
        from mmat_core.formatting import rr_step_text

        messages.append(Message(role="assistant", content=rr_step_text(recheck)))
        messages.append(Message(role="user", content=CORRECTION_REQUEST.format(
            reflection_turn=prompts.REFLECTION_TURN, reason=verdict.reason or "the reasoning does not support its conclusion")))
        context = {"question": sample.question, "answer": sample.answer, "reason": verdict.reason,
                   "critic": verdict.critic, "round": round_}
        error: StepParseError | None = None
        for attempt in range(self.repair_attempts + 1):
            request = LLMRequest(
                purpose="reflection_correction",
                messages=messages,
                prompt_version=CORRECTION_PROMPT_VERSION,
                sample_id=trace.id,
                context={**context, "repair": attempt} if attempt else context,
            )
            response, call = await self.client.complete(request)
            trace.usage.add(call.usage)
            verdict.data["correction_call"] = call.model_dump(mode="json", exclude_defaults=True)
            corrected = clean_correction(response.text)
            try:
                if corrected:
                    check_model_text(corrected, "thought", self.limits.thought)
                return corrected
            except StepParseError as exc:
                error = exc
                trace.notes.append(f"step_repair: reflection {round_ + 1} attempt {attempt + 1}: {exc}")
                messages = messages + [Message(role="assistant", content=response.text),
                                       Message(role="user", content=CORRECTION_REPAIR.format(error=exc))]
        assert error is not None
        raise error

    def _record(self, trace: Trace, verdict: Verdict, critic: Critic, round_: int, attempt: int) -> None:
        verdict.critic = verdict.critic or critic.name
        verdict.round = round_
        verdict.data["attempt"] = attempt
        if verdict.model_call is not None:
            trace.usage.add(verdict.model_call.usage)
        trace.verdicts.append(verdict)

    async def review(self, trace: Trace, *, attempt: int = 0, max_rounds: int | None = None) -> str | None:
        """Run every applicable critic once over ``trace`` (splicing reflections on ``fix``).

        Returns None when the trace passes, else the failure (``"critic: reason"``). Model-call
        errors propagate as :class:`LLMCallError`."""
        rounds_allowed = self.settings.max_rounds if max_rounds is None else max_rounds
        ctx = ReflectionContext(llm=self.client, images=self.images, settings=self.settings)  # type: ignore[arg-type]
        for critic in self.critics:
            if not critic.applies_to(trace):
                continue
            rounds = 0
            while True:
                ctx.round = rounds
                try:
                    verdict = await critic.review(trace, ctx)
                except LLMCallError:
                    raise
                except Exception as exc:  # one broken critic fails this sample, not the run
                    raise CriticError(critic.name, exc) from exc
                self._record(trace, verdict, critic, rounds, attempt)
                if verdict.verdict == "pass":
                    break
                if verdict.verdict == "reject":
                    return f"{critic.name}: {verdict.reason or 'rejected'}"
                if rounds >= rounds_allowed:
                    detail = f"unresolved after {rounds} reflection(s)" if rounds else "needs a reflection (none allowed)"
                    return f"{critic.name}: {detail}: {verdict.reason}"
                try:
                    corrected = await self.corrected_thought(trace, verdict, reflection_count(trace))
                except StepParseError as exc:
                    return f"{exc} ({critic.name}'s correction)"
                if not corrected:
                    return f"{critic.name}: the generator wrote no correction for: {verdict.reason}"
                splice(trace, corrected, reflection_count(trace))
                verdict.data["spliced"] = True
                rounds += 1
                if not self.settings.recheck:
                    break
        return None

    async def run(self, trace: Trace) -> Trace:
        """Review ``trace`` in place: splice reflections, regenerate if the policy says so, set
        its status (kept, reflected, flagged, dropped or failed) and failure reason."""
        if trace.status == "failed":
            return trace
        started = time.monotonic()
        first_attempt = attempt_of(trace)
        regenerations = 0
        try:
            while True:
                failure = await self.review(trace, attempt=first_attempt + regenerations)
                if failure is None:
                    trace.status = "reflected" if reflected_by(trace) else "kept"
                    trace.failure = None
                    return trace
                policy = self.settings.on_failure
                if policy == "regenerate":
                    if self.regenerate is not None and regenerations < self.settings.regenerate_attempts:
                        regenerations += 1
                        attempt = first_attempt + regenerations
                        trace.notes.append(REGENERATED_NOTE.format(attempt=attempt, failure=failure))
                        await self.regenerate(trace, attempt)
                        if trace.status == "failed":
                            return trace
                        continue
                    policy = self.settings.after_regenerate
                trace.failure = failure
                trace.status = "flagged" if policy == "keep_flagged" else "dropped"
                return trace
        except LLMCallError as exc:
            trace.status = "failed"
            trace.failure = f"critic_llm_error: {type(exc).__name__}: {exc}"
        except CriticError as exc:
            trace.status = "failed"
            trace.failure = f"critic_error: {exc}"
        finally:
            trace.timings["reflection_s"] = trace.timings.get("reflection_s", 0.0) + time.monotonic() - started
        return trace


class _AttemptClient:
    """Wraps the engine client so a regenerated rationale gets fresh answers: the attempt number
    goes into each request's prompt version, which is part of the cache key, so the cache cannot
    hand back the failing rationale again (and a rerun of the same attempt still hits the cache)."""

    def __init__(self, inner: LLMClient, attempt: int, temperature: float | None) -> None:
        self.inner = inner
        self.attempt = attempt
        self.temperature = temperature

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def complete(self, request: LLMRequest) -> tuple[LLMResponse, ModelCall]:
        """Forward ``request`` marked with the attempt number."""
        update: dict[str, Any] = {"prompt_version": f"{request.prompt_version}+regen{self.attempt}",
                                  "context": {**request.context, "attempt": self.attempt}}
        if self.temperature is not None and request.temperature is None:
            update["temperature"] = self.temperature
        return await self.inner.complete(request.model_copy(update=update))


def loop_regenerator(loop: RationaleLoop, temperature: float | None = None) -> Regenerate:
    """The pipeline's regenerate callback: reset a trace's rationale and run stage 2 again with
    ``loop``. Usage and notes accumulate (a regenerated sample's cost includes every attempt);
    verdicts of earlier attempts stay in the trace, tagged with their attempt number."""

    async def regenerate(trace: Trace, attempt: int) -> None:
        fresh = copy.copy(loop)
        fresh.client = _AttemptClient(loop.client, attempt, temperature)
        trace.steps = []
        trace.final_prompt = ""
        trace.final_answer = None
        trace.final_call = None
        trace.status = "kept"
        trace.failure = None
        await fresh.run(trace)

    return regenerate


def _failure_head(failure: str | None) -> str:
    return (failure or "").split(":", 1)[0].strip()


async def recritique(stage: ReflectionStage, trace: Trace) -> Trace:
    """Run ``stage``'s critics again over a stored trace, without regenerating it (``mmat critique``).

    The current rationale's verdicts from those critics are replaced. A trace that failed in
    stage 2 is returned unchanged; one dropped or flagged by a critic that is not re-run keeps
    that status, with the new verdicts recorded beside it."""
    if trace.status == "failed" or not trace.steps:
        return trace
    names = {critic.name for critic in stage.critics}
    attempt = attempt_of(trace)
    trace.verdicts = [v for v in trace.verdicts
                      if not (v.critic in names and int(v.data.get("attempt", 0)) == attempt)]
    prior_status, prior_failure = trace.status, trace.failure
    keep_prior = prior_status in ("dropped", "flagged") and _failure_head(prior_failure) not in names
    trace.status, trace.failure = "kept", None
    await stage.run(trace)
    if keep_prior and trace.status in ("kept", "reflected"):
        trace.status, trace.failure = prior_status, prior_failure
    return trace
