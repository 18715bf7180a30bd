"""The answer_match critic: verdicts from the sample's metric, no model call."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from mmat_core.components import CriticContext
from mmat_core.models import Trace, Verdict
from mmat_plugins.critics.answer_match import AnswerMatchCritic
from tests.critics.conftest import make_trace


def review(trace: Trace, **options: object) -> Verdict:
    return asyncio.run(AnswerMatchCritic(**options).review(trace, CriticContext(llm=None, images=None)))  # type: ignore[arg-type]


def test_a_matching_answer_passes_with_its_metric_and_score() -> None:
    verdict = review(make_trace(final_answer="27"))
    assert (verdict.verdict, verdict.score, verdict.data) == ("pass", 1.0, {"metric": "numeric", "matched": "27"})


def test_a_wrong_answer_is_rejected_with_what_was_expected() -> None:
    verdict = review(make_trace(final_answer="26"))
    assert verdict.verdict == "reject"
    assert verdict.reason == "final answer '26' scored 0.00 by numeric against '27' (threshold 0.5)"


def test_a_missing_final_answer_is_rejected() -> None:
    assert review(make_trace(final_answer=None)).reason == "the dialogue has no final answer"


def test_the_threshold_decides_partial_scores() -> None:
    trace = make_trace(question="What is the invoice number?", answers=("INV-20417",), final_answer="INV-2041",
                       source="docs", task_type="docvqa")
    assert review(trace).verdict == "pass"                 # ANLS 0.89
    assert review(trace, threshold=0.95).verdict == "reject"


def test_a_configured_metric_overrides_the_samples_own() -> None:
    trace = make_trace(final_answer="28", answers=("27",))
    assert review(trace, metric="relaxed").verdict == "pass"  # 28 is within 5 % of 27


def test_an_unknown_configured_metric_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="unknown metric 'bleu'"):
        AnswerMatchCritic(metric="bleu")


def test_an_unknown_metric_on_a_sample_rejects_it_with_the_reason() -> None:
    trace = make_trace()
    trace.sample.metric = "bleu"
    verdict = review(trace)
    assert verdict.verdict == "reject" and "unknown metric 'bleu'; allowed:" in verdict.reason


def test_multiple_choice_accepts_the_option_text() -> None:
    trace = make_trace(question="Which day?", answers=("B",), final_answer="Tuesday", source="tabmwp",
                       choices=["Monday", "Tuesday"], task_type="multiple_choice")
    assert review(trace).verdict == "pass"
