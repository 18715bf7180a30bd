"""The LLM judges (general, math, quality): every verdict path against the scripted judge server."""

from __future__ import annotations

import asyncio
import json

import pytest

from mmat_core.components import CriticContext
from mmat_core.config import ReflectionSettings
from mmat_core.engine.errors import PermanentError
from mmat_core.engine.reflection import ReflectionContext
from mmat_core.models import Trace, Verdict
from mmat_plugins.critics.judges import GeneralCritic, MathCritic, QualityCritic
from tests.critics.conftest import Judge, make_trace
from tests.critics.judge import CALL_COST, PROMPT_TOKENS
from tests.fakes.openai_server import Reply


def review(critic: object, trace: Trace, judge: Judge, settings: ReflectionSettings | None = None) -> Verdict:
    ctx = ReflectionContext(llm=judge.client(), images=None, settings=settings)  # type: ignore[arg-type]
    return asyncio.run(critic.review(trace, ctx))  # type: ignore[attr-defined]


def body_text(body: dict) -> str:
    return json.dumps(body["messages"])


# ---- general (cheating) ----------------------------------------------------------------------

def test_general_passes_on_an_empty_object(judge: Judge) -> None:
    judge.script.on("critic_general", {})
    verdict = review(GeneralCritic(), make_trace(), judge)
    assert (verdict.critic, verdict.verdict, verdict.reason) == ("general", "pass", "")


def test_general_asks_for_a_fix_with_the_judges_reason(judge: Judge) -> None:
    judge.script.on("critic_general", {"reason": "The total 27 is asserted without reading Chloe's row."})
    verdict = review(GeneralCritic(), make_trace(), judge)
    assert verdict.verdict == "fix"
    assert verdict.reason == "The total 27 is asserted without reading Chloe's row."


def test_general_treats_an_empty_reason_as_clean(judge: Judge) -> None:
    judge.script.on("critic_general", {"reason": ""})
    assert review(GeneralCritic(), make_trace(), judge).verdict == "pass"


def test_general_sees_the_dialogue_but_not_the_final_question_or_answer(judge: Judge) -> None:
    trace = make_trace(final_answer="twenty-seven")
    review(GeneralCritic(), trace, judge)
    sent = body_text(judge.script.requests("critic_general")[0])
    assert "Ann read 12 books" in sent and "<SIGNAL>end</SIGNAL>" in sent
    assert "twenty-seven" not in sent and "Based on the above information" not in sent


def test_general_reasks_once_when_the_reply_is_not_json(judge: Judge) -> None:
    judge.script.on("critic_general", "I think it is fine.", {"reason": "unsupported jump"})
    verdict = review(GeneralCritic(), make_trace(), judge)
    assert (verdict.verdict, verdict.reason) == ("fix", "unsupported jump")
    repair = judge.script.requests("critic_general")[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "I think it is fine."}
    assert "could not be read: no JSON object found" in repair[-1]["content"]
    # Both attempts are paid for and recorded on the verdict.
    assert verdict.model_call is not None and verdict.model_call.attempts == 2
    assert verdict.model_call.usage.prompt_tokens == 2 * PROMPT_TOKENS


def test_general_rejects_when_the_reply_stays_unreadable(judge: Judge) -> None:
    judge.script.on("critic_general", '```json\n{"reason": broken}\n```')
    verdict = review(GeneralCritic(), make_trace(), judge)
    assert verdict.verdict == "reject"
    assert verdict.reason.startswith("judge_malformed: invalid JSON")
    assert len(judge.script.requests("critic_general")) == 2


def test_general_can_pass_unreadable_replies_when_configured(judge: Judge) -> None:
    judge.script.on("critic_general", "no idea")
    verdict = review(GeneralCritic(on_malformed="pass", repair_attempts=0), make_trace(), judge)
    assert verdict.verdict == "pass" and verdict.data == {"malformed": True}
    assert len(judge.script.requests("critic_general")) == 1


def test_general_reads_json_inside_a_code_fence(judge: Judge) -> None:
    judge.script.on("critic_general", '```json\n{"reason": "guessed the count"}\n```')
    assert review(GeneralCritic(), make_trace(), judge).reason == "guessed the count"


def test_a_judge_http_error_propagates_as_a_model_call_error(judge: Judge) -> None:
    judge.script.on("critic_general", Reply.status(400, "bad request"))
    with pytest.raises(PermanentError):
        review(GeneralCritic(), make_trace(), judge)


# ---- math (step skipping) ----------------------------------------------------------------------

def test_math_passes_when_nothing_was_skipped(judge: Judge) -> None:
    judge.script.on("critic_math", {"reason": "", "thought": "null"})
    verdict = review(MathCritic(), make_trace(), judge)
    assert verdict.verdict == "pass" and verdict.data == {}


def test_math_fix_carries_the_supplementary_thought(judge: Judge) -> None:
    judge.script.on("critic_math", {"reason": "the addition is not shown", "thought": "12 + 15 = 27."})
    verdict = review(MathCritic(), make_trace(), judge)
    assert (verdict.verdict, verdict.reason, verdict.data) == ("fix", "the addition is not shown", {"thought": "12 + 15 = 27."})


def test_math_fix_without_a_thought_records_null(judge: Judge) -> None:
    judge.script.on("critic_math", {"reason": "the addition is not shown", "thought": "null"})
    assert review(MathCritic(), make_trace(), judge).data == {"thought": "null"}


def test_math_is_given_the_last_two_reasoning_rounds(judge: Judge) -> None:
    trace = make_trace(thoughts=("Round one reads the table.", "Round two picks the rows.", "Round three adds them."))
    review(MathCritic(), trace, judge)
    instruction = judge.script.requests("critic_math")[0]["messages"][-1]["content"]
    assert "- Round two picks the rows.\n- Round three adds them." in instruction
    assert "Round one" not in instruction


def test_math_rejects_a_thought_of_the_wrong_type_after_reasking(judge: Judge) -> None:
    judge.script.on("critic_math", {"reason": "skipped", "thought": 27})
    verdict = review(MathCritic(), make_trace(), judge)
    assert verdict.verdict == "reject" and '"thought" must be a string' in verdict.reason


@pytest.mark.parametrize(("source", "subset", "task_type", "tags", "applies"), [
    ("tabmwp", None, "table", [], True),
    ("llava_cot", "GeoQA+", "multiple_choice", [], True),
    ("the_cauldron", "clevr_math", "vqa", [], True),
    ("the_cauldron", "intergps", "vqa", [], True),
    ("llava_cot", "CLEVR-Math", "vqa", [], True),
    ("mine", None, "vqa", ["math"], True),
    ("mine", None, "math", [], True),
    ("the_cauldron", "docvqa", "docvqa", [], False),
    ("visual_cot", "gqa", "vqa", [], False),
])
def test_math_applies_to_math_like_sources_only(source: str, subset: str | None, task_type: str, tags: list[str],
                                                 applies: bool) -> None:
    trace = make_trace(source=source, subset=subset, task_type=task_type, tags=tags)
    assert MathCritic().applies_to(trace) is applies


def test_math_can_be_extended_to_more_sources() -> None:
    trace = make_trace(source="the_cauldron", subset="robut_wtq", task_type="table")
    assert MathCritic(sources=["robut-wtq"]).applies_to(trace)
    assert MathCritic(all_samples=True).applies_to(make_trace(source="x", task_type="vqa"))


# ---- quality -----------------------------------------------------------------------------------

def test_quality_keeps_a_score_at_the_threshold(judge: Judge) -> None:
    judge.script.on("critic_quality", {"quality_score": 0.6, "scoring_reason": "adequate"})
    verdict = review(QualityCritic(), make_trace(), judge)
    assert (verdict.verdict, verdict.score, verdict.reason) == ("pass", 0.6, "adequate")


def test_quality_rejects_a_score_below_the_threshold(judge: Judge) -> None:
    judge.script.on("critic_quality", {"quality_score": 0.4, "scoring_reason": "ignores the image"})
    verdict = review(QualityCritic(), make_trace(), judge)
    assert verdict.verdict == "reject" and verdict.score == 0.4
    assert verdict.reason == "quality score 0.4 below 0.6: ignores the image"


def test_quality_takes_the_run_threshold_unless_it_sets_its_own(judge: Judge) -> None:
    judge.script.on("critic_quality", {"quality_score": 0.7, "scoring_reason": "ok"})
    strict = ReflectionSettings(quality_threshold=0.8)
    assert review(QualityCritic(), make_trace(), judge, strict).verdict == "reject"
    assert review(QualityCritic(threshold=0.5), make_trace(), judge, strict).verdict == "pass"


def test_quality_score_outside_zero_to_one_is_unreadable(judge: Judge) -> None:
    judge.script.on("critic_quality", {"quality_score": 7, "scoring_reason": "great"})
    verdict = review(QualityCritic(), make_trace(), judge)
    assert verdict.verdict == "reject" and "outside 0.0-1.0" in verdict.reason


def test_quality_missing_score_is_unreadable(judge: Judge) -> None:
    judge.script.on("critic_quality", {"scoring_reason": "forgot the score"})
    assert "missing or not a number" in review(QualityCritic(), make_trace(), judge).reason


def test_quality_judge_is_shown_the_image(judge: Judge) -> None:
    review(QualityCritic(), make_trace(), judge)
    first = judge.script.requests("critic_quality")[0]["messages"][0]["content"]
    assert first[0]["type"] == "image_url" and first[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_judges_record_the_call_and_its_cost(judge: Judge) -> None:
    verdict = review(QualityCritic(), make_trace(), judge)
    assert verdict.model_call is not None and verdict.model_call.purpose == "critic_quality"
    assert verdict.model_call.usage.cost_usd == pytest.approx(CALL_COST)


def test_a_judge_without_an_llm_says_how_to_configure_one() -> None:
    with pytest.raises(RuntimeError, match="needs an LLM backend; configure `llm:`"):
        asyncio.run(GeneralCritic().review(make_trace(), CriticContext(llm=None, images=None)))  # type: ignore[arg-type]
