"""Dyn-VQA's F1-Recall (the task's utils module, as lmms-eval imports it) against hand-computed cases."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from mmat_plugins.evaluation.lmms.tasks import dynvqa_task_dir


def load_utils() -> ModuleType:
    """The module by path, exactly as lmms-eval's ``!function utils.NAME`` loads it (it is no package)."""
    spec = importlib.util.spec_from_file_location("dynvqa_utils", dynvqa_task_dir() / "utils.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


utils = load_utils()


@pytest.mark.parametrize(("response", "references", "expected"), [
    # every reference token present, extra words in the response cost nothing
    ("Leonardo DiCaprio does not have any children, as far as is known.",
     ["Leonardo DiCaprio does not have any children."], 1.0),
    # 2 of 4 tokens ("porsche 944" of "porsche 944 from 1986"): recall 0.5
    ("It is a Porsche 944.", ["Porsche 944 from 1986"], 0.5),
    # articles and punctuation are dropped before counting: "the" does not count, "U.S." -> "u s"
    ("The U.S.", ["the U.S. team"], 2 / 3),
    # the best reference wins (Chinese and English phrasings of one answer)
    ("No humans have been to Mars yet.", ["目前还没有人类去过火星。", "No humans have been to Mars yet."], 1.0),
    # Chinese counts per character: 人 类 火 星 are 4 of the reference's 11 characters
    ("人类火星", ["目前还没有人类去过火星"], 4 / 11),
    # a repeated reference token must be matched as often as it occurs
    ("one", ["one one"], 0.5),
    # numbers released as ints are compared as text
    ("zero humans", [0, "zero"], 1.0),
    # nothing in common, empty response, no reference at all
    ("Paris", ["London"], 0.0),
    ("", ["London"], 0.0),
    ("London", [], 0.0),
])
def test_f1_recall_matches_hand_computed_values(response: str, references: list[object], expected: float) -> None:
    assert utils.f1_recall(response, references) == pytest.approx(expected)


def test_a_reference_of_only_punctuation_and_articles_scores_zero_not_a_division_error() -> None:
    assert utils.token_recall("anything", "The ...") == 0.0


def test_normalisation_folds_case_full_width_forms_and_unicode_punctuation() -> None:
    assert utils.tokens("ＡＢＣ，“Hello”—World!") == ["abc", "hello", "world"]


def test_process_results_reports_f1_recall_under_the_metric_name_of_the_yaml() -> None:
    doc = {"answer": ["Porsche 944"], "question": "q", "gloden_query": "g"}
    assert utils.dynvqa_process_results(doc, ["a Porsche 944"]) == {"f1_recall": 1.0}


def test_golden_mode_asks_the_golden_query_and_plain_mode_the_question() -> None:
    doc = {"question": "When did he land on the moon?", "gloden_query": "When did Lance Armstrong land on the moon?"}
    kwargs = {"pre_prompt": "", "post_prompt": " Answer briefly."}
    assert utils.dynvqa_doc_to_text(doc, kwargs) == "When did he land on the moon? Answer briefly."
    assert utils.dynvqa_golden_doc_to_text(doc, kwargs) == "When did Lance Armstrong land on the moon? Answer briefly."
