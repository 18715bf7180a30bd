"""The reflection stage: the splice's exact text, rounds, re-checks and the failure policy, with
every judge and the generator's corrections answered by the scripted server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmat_core import prompts
from mmat_core.components import Critic, CriticContext
from mmat_core.config import ReflectionSettings
from mmat_core.engine.rationale import LoopSettings, RationaleLoop
from mmat_core.engine.reflection import (
    RECHECK_THOUGHTS,
    ReflectionStage,
    dialogue_messages,
    loop_regenerator,
    recheck_thought,
    recritique,
    reflected_by,
)
from mmat_core.engine.tools import ToolRunner
from mmat_core.formatting import orr_answer, rr_messages
from mmat_core.images import ImageStore
from mmat_core.models import Trace, Verdict
from mmat_plugins.critics.answer_match import AnswerMatchCritic
from mmat_plugins.critics.judges import GeneralCritic, MathCritic, QualityCritic
from tests.critics.conftest import Judge, make_trace
from tests.critics.judge import CALL_COST

CHEATING = {"reason": "The total is stated without adding the two rows."}
CORRECTION = "Ann read 12 and Chloe read 15, and 12 + 15 = 27, so together they read 27 books."


def run_stage(judge: Judge, trace: Trace, critics: list[Critic], **settings: object) -> Trace:
    stage = ReflectionStage(critics, judge.client(), ImageStore(), ReflectionSettings(**settings))  # type: ignore[arg-type]
    return asyncio.run(stage.run(trace))


# ---- the splice ------------------------------------------------------------------------------

def test_a_fix_splices_the_reflection_in_the_released_format(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING, {})
    judge.script.on("reflection_correction", CORRECTION)
    trace = run_stage(judge, make_trace(), [GeneralCritic()])
    messages = rr_messages(trace, [], rag_enabled=False)
    recheck = recheck_thought(trace, 0)
    assert recheck in RECHECK_THOUGHTS
    assert [m["content"] for m in messages[4:]] == [
        "<THOUGHT>Adding them gives the total.</THOUGHT><SIGNAL>continue</SIGNAL>",
        "No additional operator or rag results were selected in the previous step. Please continue your reasoning.",
        f"<THOUGHT>{recheck}</THOUGHT><SIGNAL>reflection</SIGNAL>",
        "No additional operator or rag results were selected in the previous step. Please make a reflection.",
        f"<THOUGHT>{CORRECTION}</THOUGHT><SIGNAL>end</SIGNAL>",
        prompts.final_turn(trace.sample.question),
        "27",
    ]
    assert [m["role"] for m in messages[4:]] == ["assistant", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert (trace.status, trace.failure) == ("reflected", None)


def test_orr_joins_the_reflection_into_its_thought(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING, {})
    judge.script.on("reflection_correction", CORRECTION)
    trace = run_stage(judge, make_trace(), [GeneralCritic()])
    assert f"Adding them gives the total. {recheck_thought(trace, 0)} {CORRECTION}</THOUGHT>" in orr_answer(trace)


def test_the_recheck_sentence_varies_across_samples_and_is_stable() -> None:
    sentences = {recheck_thought(make_trace(sample_id=f"s/{i}"), 0) for i in range(40)}
    assert len(sentences) > 3
    assert recheck_thought(make_trace(sample_id="s/1"), 0) == recheck_thought(make_trace(sample_id="s/1"), 0)


def test_the_generator_writes_the_correction_given_the_critics_reason(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING, {})
    judge.script.on("reflection_correction", f"<THOUGHT>{CORRECTION}</THOUGHT><SIGNAL>end</SIGNAL>")
    trace = run_stage(judge, make_trace(), [GeneralCritic()])
    request = judge.script.requests("reflection_correction")[0]["messages"]
    assert request[0]["role"] == "system" and "the correct answer is: 27" in request[0]["content"]
    assert CHEATING["reason"] in request[-1]["content"]
    assert request[-1]["content"].startswith(prompts.REFLECTION_TURN)
    assert request[-2]["content"].endswith("<SIGNAL>reflection</SIGNAL>")
    assert trace.steps[-1].thought == CORRECTION  # tags the generator added are removed
    assert trace.steps[-1].kind == "correction"


def test_the_math_critics_supplementary_thought_is_used_as_is(judge: Judge) -> None:
    judge.script.on("critic_math", {"reason": "the addition is skipped", "thought": "12 + 15 = 27."},
                    {"reason": "", "thought": "null"})
    trace = run_stage(judge, make_trace(), [MathCritic()])
    assert trace.steps[-1].thought == "12 + 15 = 27."
    assert judge.script.requests("reflection_correction") == []
    assert reflected_by(trace) == ["math"]


def test_a_math_fix_without_a_thought_asks_the_generator(judge: Judge) -> None:
    judge.script.on("critic_math", {"reason": "the addition is skipped", "thought": "null"}, {"reason": ""})
    judge.script.on("reflection_correction", CORRECTION)
    trace = run_stage(judge, make_trace(), [MathCritic()])
    assert trace.steps[-1].thought == CORRECTION


def test_judges_after_a_splice_see_the_corrected_dialogue(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING, {})
    judge.script.on("reflection_correction", CORRECTION)
    run_stage(judge, make_trace(), [GeneralCritic()])
    recheck = judge.script.requests("critic_general")[1]
    assert CORRECTION in json.dumps(recheck["messages"])


# ---- rounds and re-checks ----------------------------------------------------------------------

def test_a_recheck_that_passes_keeps_the_sample_reflected(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING, {})
    trace = run_stage(judge, make_trace(), [GeneralCritic()])
    assert [(v.verdict, v.round) for v in trace.verdicts] == [("fix", 0), ("pass", 1)]
    assert trace.verdicts[0].data["spliced"] is True


def test_a_defect_that_outlives_its_rounds_drops_the_sample(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING)
    trace = run_stage(judge, make_trace(), [GeneralCritic()])
    assert trace.status == "dropped"
    assert trace.failure == f"general: unresolved after 1 reflection(s): {CHEATING['reason']}"


def test_more_rounds_splice_more_reflections(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING, CHEATING, {})
    trace = run_stage(judge, make_trace(), [GeneralCritic()], max_rounds=2)
    assert trace.status == "reflected"
    assert [s.signal for s in trace.steps] == ["continue", "continue", "reflection", "continue", "reflection", "end"]


def test_without_recheck_one_reflection_settles_the_defect(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING)
    trace = run_stage(judge, make_trace(), [GeneralCritic()], recheck=False)
    assert trace.status == "reflected" and len(judge.script.requests("critic_general")) == 1


def test_zero_rounds_turns_every_fix_into_a_failure(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING)
    trace = run_stage(judge, make_trace(), [GeneralCritic()], max_rounds=0)
    assert trace.status == "dropped" and trace.failure.startswith("general: needs a reflection (none allowed)")
    assert [s.kind for s in trace.steps] == ["rationale", "rationale"]


def test_keep_flagged_keeps_a_failing_sample_with_its_reason(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING)
    trace = run_stage(judge, make_trace(), [GeneralCritic()], on_failure="keep_flagged")
    assert trace.status == "flagged" and trace.kept
    assert trace.failure.startswith("general: unresolved")


def test_a_reject_drops_the_sample_and_stops_the_review(judge: Judge) -> None:
    trace = run_stage(judge, make_trace(final_answer="26"), [AnswerMatchCritic(), GeneralCritic(), QualityCritic()])
    assert trace.status == "dropped" and trace.failure.startswith("answer_match: final answer '26' scored 0.00 by numeric")
    assert judge.script.seen == []  # no judge was asked about a wrong answer


def test_critics_run_in_order_and_all_verdicts_are_recorded(judge: Judge) -> None:
    judge.script.on("critic_quality", {"quality_score": 0.9, "scoring_reason": "good"})
    trace = run_stage(judge, make_trace(), [QualityCritic(), MathCritic(), GeneralCritic(), AnswerMatchCritic()])
    assert [v.critic for v in trace.verdicts] == ["answer_match", "general", "math", "quality"]
    assert trace.status == "kept"


def test_judge_costs_are_added_to_the_trace(judge: Judge) -> None:
    judge.script.on("critic_general", CHEATING, {})
    trace = run_stage(judge, make_trace(), [GeneralCritic(), QualityCritic()])
    # general twice, one correction, quality once
    assert trace.usage.cost_usd == pytest.approx(4 * CALL_COST)


def test_a_judge_error_fails_the_sample_with_the_reason(judge: Judge) -> None:
    from tests.fakes.openai_server import Reply

    judge.script.on("critic_general", Reply.status(400, "model not found"))
    trace = run_stage(judge, make_trace(), [GeneralCritic()])
    assert trace.status == "failed" and trace.failure.startswith("critic_llm_error: PermanentError")


class BrokenCritic(Critic):
    """A critic with a bug."""

    name = "broken"
    description = "raises"

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        raise KeyError("oops")


def test_a_critic_that_crashes_fails_only_its_sample(judge: Judge) -> None:
    trace = run_stage(judge, make_trace(), [BrokenCritic()])
    assert (trace.status, trace.failure) == ("failed", "critic_error: broken: KeyError: 'oops'")


def test_dialogue_messages_can_lead_with_the_images() -> None:
    messages = dialogue_messages(make_trace(), with_images=True)
    assert messages[0].content[0].type == "image"  # type: ignore[index,union-attr]
    assert messages[0].text().endswith("Please start your reasoning.")


# ---- regenerate ---------------------------------------------------------------------------------

@pytest.fixture
def loop(judge: Judge) -> Iterator[RationaleLoop]:
    runner = ToolRunner([], ImageStore(), workers=1)
    yield RationaleLoop(judge.client(), runner, None, LoopSettings(max_turns=4, final_answer="model"))
    runner.close()


def regenerate_stage(judge: Judge, loop: RationaleLoop, **settings: object) -> ReflectionStage:
    return ReflectionStage([AnswerMatchCritic(), GeneralCritic()], judge.client(), ImageStore(),
                           ReflectionSettings(on_failure="regenerate", **settings),  # type: ignore[arg-type]
                           regenerate=loop_regenerator(loop))


def test_regenerate_reruns_the_rationale_and_keeps_a_passing_one(judge: Judge, loop: RationaleLoop) -> None:
    judge.script.on("final_answer", "27")
    trace = asyncio.run(regenerate_stage(judge, loop).run(make_trace(final_answer="26")))
    assert (trace.status, trace.final_answer) == ("kept", "27")
    assert trace.notes[-1].startswith("regenerated (attempt 1) after answer_match: final answer '26'")
    assert [(v.critic, v.verdict, v.data["attempt"]) for v in trace.verdicts] == [
        ("answer_match", "reject", 0), ("answer_match", "pass", 1), ("general", "pass", 1)]
    assert trace.steps[-1].thought == "Reading the rows and comparing them gives the result."


def test_regenerated_requests_bypass_the_cached_failing_answers(judge: Judge, tmp_path: Path) -> None:
    from mmat_core.engine.cache import Cache

    judge.script.on("final_answer", "26", "27")
    client = judge.client()
    client.cache = Cache(tmp_path / "cache.sqlite")
    runner = ToolRunner([], ImageStore(), workers=1)
    loop = RationaleLoop(client, runner, None, LoopSettings(max_turns=4, final_answer="model"))
    stage = ReflectionStage([AnswerMatchCritic()], client, ImageStore(), ReflectionSettings(on_failure="regenerate"),
                            regenerate=loop_regenerator(loop))
    trace = make_trace(final_answer=None)
    trace.steps = []

    async def generate_then_review() -> Trace:
        await loop.run(trace)
        return await stage.run(trace)

    asyncio.run(generate_then_review())
    runner.close()
    client.cache.close()
    # The first rationale answered 26 and was cached; the regenerated one asked the server again.
    assert (trace.status, trace.final_answer) == ("kept", "27")
    assert len(judge.script.requests("final_answer")) == 2


def test_regenerate_gives_up_after_its_attempts(judge: Judge, loop: RationaleLoop) -> None:
    judge.script.on("final_answer", "26")
    trace = asyncio.run(regenerate_stage(judge, loop, regenerate_attempts=2).run(make_trace(final_answer="26")))
    assert trace.status == "dropped" and trace.failure.startswith("answer_match")
    assert len(judge.script.requests("final_answer")) == 2
    assert sum(note.startswith("regenerated") for note in trace.notes) == 2


def test_regenerate_can_end_with_keep_flagged(judge: Judge, loop: RationaleLoop) -> None:
    judge.script.on("final_answer", "26")
    trace = asyncio.run(regenerate_stage(judge, loop, after_regenerate="keep_flagged").run(make_trace(final_answer="26")))
    assert trace.status == "flagged"


def test_regenerate_without_a_loop_applies_the_fallback(judge: Judge) -> None:
    trace = run_stage(judge, make_trace(final_answer="26"), [AnswerMatchCritic()], on_failure="regenerate")
    assert trace.status == "dropped"


# ---- re-critique --------------------------------------------------------------------------------

def test_recritique_replaces_the_rerun_critics_verdicts(judge: Judge) -> None:
    trace = run_stage(judge, make_trace(), [AnswerMatchCritic(), QualityCritic()])
    judge.script.on("critic_quality", {"quality_score": 0.2, "scoring_reason": "incoherent"})
    stage = ReflectionStage([QualityCritic()], judge.client(), ImageStore(), ReflectionSettings())
    asyncio.run(recritique(stage, trace))
    assert [(v.critic, v.verdict) for v in trace.verdicts] == [("answer_match", "pass"), ("quality", "reject")]
    assert trace.status == "dropped" and trace.failure.startswith("quality: quality score 0.2")


def test_recritique_keeps_a_drop_by_a_critic_it_does_not_rerun(judge: Judge) -> None:
    trace = run_stage(judge, make_trace(final_answer="26"), [AnswerMatchCritic()])
    stage = ReflectionStage([QualityCritic()], judge.client(), ImageStore(), ReflectionSettings())
    asyncio.run(recritique(stage, trace))
    assert trace.status == "dropped" and trace.failure.startswith("answer_match")
    assert trace.verdicts[-1].critic == "quality" and trace.verdicts[-1].verdict == "pass"
