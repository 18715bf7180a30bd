"""Fixtures of the evaluation tests: the eight benchmarks' local copies, and a scripted judge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mmat_plugins.evaluation.lmms.fixtures import fixture_answers, write_fixtures

from tests.fakes.openai_server import RecordedRequest, Reply


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The eight fixtures in their Hub layout under one root."""
    root = tmp_path_factory.mktemp("benchmarks")
    write_fixtures(root)
    return root


def judge_reply(request: RecordedRequest) -> Reply:
    """A judge that does what lmms-eval asks of one: MathVista's answer extraction, HallusionBench's grading."""
    text = "".join(m["content"] if isinstance(m["content"], str) else "" for m in request.body["messages"])
    if "Imagine you are an intelligent teacher" in text:
        reference = re.search(r"Reference answer: (\w+)", text)
        prediction = re.search(r"Prediction answer:\s*(\w+)", text)
        same = reference and prediction and reference.group(1).lower() == prediction.group(1).lower()
        return Reply.text_reply("correct" if same else "incorrect")
    tail = text.rsplit("Extracted answer:", 1)[0]
    answer = next((a for q, a in fixture_answers().items() if q in tail.rsplit("Question:", 1)[-1]), "")
    return Reply.text_reply(answer)
