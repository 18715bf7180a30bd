"""Stage 3: run the critics over a finished Trace and splice in reflections.

A critic answering ``fix`` gets a reflection spliced in before the final question, exactly in the
released data's shape::

    assistant  <THOUGHT>{a short re-check sentence}</THOUGHT><SIGNAL>reflection</SIGNAL>
    user       No additional operator or rag results were selected in the previous step. Please make a reflection.
    assistant  <THOUGHT>{corrected or supplementary reasoning}</THOUGHT><SIGNAL>end</SIGNAL>

The step that used to end the reasoning becomes ``continue`` (answered with the no-tool turn).
The corrected thought is the critic's own supplementary reasoning when it gives one (the math
critic does), otherwise the generator writes it, given the critic's reason.
"""

from __future__ import annotations

import hashlib
import time

from mmat_core import prompts
from mmat_core.components import Critic, CriticContext, LLMClient, LLMRequest, Message
from mmat_core.config import ReflectionSettings
from mmat_core.engine.errors import LLMCallError
from mmat_core.models import Step, Trace, Verdict

RECHECK_THOUGHTS = (
    "Wait, let me re-check this before answering.",
    "Hold on, let me verify the reasoning so far.",
    "Let me double-check this step before concluding.",
    "Wait a moment, I should re-examine that.",
    "Let me pause and check whether this really follows.",
    "Before I answer, let me re-check the evidence.",
)

CORRECTION_PROMPT_VERSION = "correct-1"
CORRECTION_PROMPT = """A reviewer found a problem in your reasoning above: {reason}
Write the corrected or supplementary reasoning that fixes it, deriving the answer from the
evidence in the dialogue. Reply with the reasoning only, in plain text, without restating the
known answer as a given."""


def recheck_thought(trace: Trace, round_: int) -> str:
    """A varied, deterministic "let me re-check" sentence for this sample and round."""
    digest = hashlib.sha256(f"{trace.id}:{round_}".encode()).digest()
    return RECHECK_THOUGHTS[digest[0] % len(RECHECK_THOUGHTS)]


def dialogue_messages(trace: Trace) -> list[Message]:
    """The dialogue so far as plain chat messages (RR step tags, no system prompt, no answer)."""
    from mmat_core.formatting import rr_step_text

    messages = [Message(role="user", content=prompts.first_turn(trace.sample.question, trace.sample.constraint))]
    for step in trace.steps:
        messages.append(Message(role="assistant", content=rr_step_text(step)))
        if step.signal != "end":
            messages.append(Message(role="user", content=step.observation))
    return messages


def splice(trace: Trace, verdict: Verdict, corrected: str, round_: int) -> None:
    """Insert the reflection and the corrected thought before the final question."""
    if trace.steps and trace.steps[-1].signal == "end":
        last = trace.steps[-1]
        last.signal = "continue"
        last.observation = prompts.NO_TOOL
    trace.steps.append(
        Step(kind="reflection", thought=recheck_thought(trace, round_), signal="reflection", observation=prompts.REFLECTION_TURN)
    )
    trace.steps.append(Step(kind="correction", thought=corrected, signal="end"))


class ReflectionStage:
    """Runs critics in order and applies the reflection policy."""

    def __init__(self, critics: list[Critic], client: LLMClient | None, images: object, settings: ReflectionSettings) -> None:
        self.critics = sorted(critics, key=lambda c: (c.order, c.name))
        self.client = client
        self.images = images
        self.settings = settings

    async def _corrected_thought(self, trace: Trace, verdict: Verdict) -> str:
        supplied = verdict.data.get("thought")
        if isinstance(supplied, str) and supplied.strip() and supplied.strip().lower() != "null":
            return supplied.strip()
        if self.client is None:
            return verdict.reason
        messages = dialogue_messages(trace)
        messages.append(Message(role="user", content=CORRECTION_PROMPT.format(reason=verdict.reason)))
        request = LLMRequest(
            purpose="reflection_correction",
            messages=messages,
            prompt_version=CORRECTION_PROMPT_VERSION,
            sample_id=trace.id,
            context={"question": trace.sample.question, "answer": trace.sample.answer, "reason": verdict.reason},
        )
        response, call = await self.client.complete(request)
        trace.usage.add(call.usage)
        return response.text.strip()

    async def run(self, trace: Trace) -> Trace:
        """Review ``trace``; splice reflections, set its status."""
        if trace.status == "failed":
            return trace
        started = time.monotonic()
        ctx = CriticContext(llm=self.client, images=self.images)  # type: ignore[arg-type]
        rounds = 0
        try:
            for critic in self.critics:
                if not critic.applies_to(trace):
                    continue
                ctx.round = rounds
                verdict = await critic.review(trace, ctx)
                if verdict.model_call is not None:
                    trace.usage.add(verdict.model_call.usage)
                verdict.round = rounds
                trace.verdicts.append(verdict)
                if verdict.verdict == "reject":
                    trace.status = "dropped"
                    trace.failure = f"{critic.name}: {verdict.reason}"
                    return trace
                if verdict.verdict == "fix":
                    if rounds >= self.settings.max_rounds:
                        if self.settings.on_failure == "drop":
                            trace.status = "dropped"
                            trace.failure = f"{critic.name}: unresolved after {rounds} reflection(s)"
                            return trace
                        trace.status = "flagged"
                        continue
                    corrected = await self._corrected_thought(trace, verdict)
                    splice(trace, verdict, corrected, rounds)
                    rounds += 1
                    trace.status = "reflected"
        except LLMCallError as exc:
            trace.status = "failed"
            trace.failure = f"critic_llm_error: {type(exc).__name__}: {exc}"
        finally:
            trace.timings["reflection_s"] = time.monotonic() - started
        return trace
