"""Sources as the paper used them (issue 14, item 4): InfoSeek's quota under ``mix: paper``,
TabMWP's answers as the dataset gives them, and later dialogue turns that keep their context
(or are skipped with a counted reason), never orphan questions. Fixtures are the collections'
real published layouts (tests/sources/fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmat_core.models import Rejected, SourceSample
from mmat_core.pipeline import Pipeline
from mmat_plugins.sources.cauldron import CauldronSource
from mmat_core.authoring.sources import CONTEXT_HEADER, CONTEXT_QUESTION
from mmat_plugins.sources.generic import LlavaSource
from mmat_plugins.sources.infoseek import PAPER_COUNT, InfoSeekSource
from mmat_plugins.sources.llava_cot import LlavaCoTSource
from mmat_plugins.sources.tabmwp import TabMWPSource
from tests.sources import fixtures

WORD = "\nAnswer the question using a single word or phrase."


def _samples(rows: list[Any]) -> list[SourceSample]:
    return [r for r in rows if isinstance(r, SourceSample)]


def _build(tmp_path: Path, source: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    pipeline = Pipeline(source=source, llm="offline", tools=[], critics=["answer_match"], formatters=["rr"], search=False)
    result = pipeline.run_local(tmp_path / "run")
    quarantine = [json.loads(line) for line in (tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()]
    return result, quarantine


# ---- InfoSeek ------------------------------------------------------------------------------------


def test_infoseek_paper_mix_caps_at_the_papers_131400_questions(tmp_path: Path) -> None:
    root = fixtures.infoseek(tmp_path)
    plan = InfoSeekSource(path=str(root), image_map=str(root / "image_map.jsonl"), mix="paper").curation_plan()
    assert plan[None].quota == PAPER_COUNT == 131_400
    assert plan[None].ratio is None  # a file smaller than the quota is used whole


def test_infoseek_without_mix_paper_has_no_quota(tmp_path: Path) -> None:
    root = fixtures.infoseek(tmp_path)
    assert InfoSeekSource(path=str(root), image_map=str(root / "image_map.jsonl")).curation_plan() == {}


def _many_infoseek(root: Path, count: int) -> Path:
    fixtures.infoseek(root)
    fixtures.write_jsonl(root / "infoseek_train.jsonl", [
        {"data_id": f"infoseek_train_{i:08d}", "image_id": "oven_00012345", "question": f"Question number {i} about this person?",
         "answer": [f"answer {i}"], "answer_eval": [f"answer {i}"], "data_split": "train"} for i in range(count)])
    return root


def test_infoseek_paper_mix_fills_its_quota_from_the_whole_file_not_its_first_lines(tmp_path: Path) -> None:
    root = _many_infoseek(tmp_path / "infoseek", 60)
    result, _ = _build(tmp_path, {"name": "infoseek", "path": str(root), "image_map": str(root / "image_map.jsonl"),
                                  "mix": "paper", "quota": 6})
    kept = [json.loads(line)["id"] for line in (tmp_path / "run" / "rr.jsonl").read_text().splitlines()]
    numbers = sorted(int(k.split("_")[-1].split("/")[0]) for k in kept)
    assert len(numbers) == 6
    assert numbers != list(range(6))  # a seeded draw over all 60 rows, capped at the quota
    assert result.manifest.yield_by_source["infoseek"].generated == 6


def test_infoseek_accepts_the_options_a_paper_recipe_sets(tmp_path: Path) -> None:
    root = fixtures.infoseek(tmp_path)
    source = InfoSeekSource(path=str(root), image_map=str(root / "image_map.jsonl"), mix="paper", ratio=0.5, quota=10)
    assert (source.curation_plan()[None].quota, source.curation_plan()[None].ratio) == (10, 0.5)


# ---- TabMWP --------------------------------------------------------------------------------------


def test_tabmwp_multiple_choice_answer_is_the_datasets_text_not_a_letter(tmp_path: Path) -> None:
    _, choice = _samples(list(TabMWPSource(path=str(fixtures.tabmwp(tmp_path))).iter_rows()))
    assert choice.answer == "atlas"
    assert choice.answers == ["atlas"]


def test_tabmwp_options_go_in_the_question_in_tabmwps_own_form(tmp_path: Path) -> None:
    _, choice = _samples(list(TabMWPSource(path=str(fixtures.tabmwp(tmp_path))).iter_rows()))
    assert choice.question == "Which book costs more?\nOptions: (A) atlas (B) novel"
    assert choice.constraint == WORD  # never asks for a letter the label is not


def test_tabmwp_paper_mix_is_the_whole_train_split(tmp_path: Path) -> None:
    plan = TabMWPSource(path=str(fixtures.tabmwp(tmp_path)), mix="paper").curation_plan()
    assert plan[None].quota == 23_059


def test_a_cauldron_answer_given_as_an_options_text_stays_that_text(tmp_path: Path) -> None:
    root = fixtures.cauldron(tmp_path, {"iconqa": [{"images": [fixtures.photo("chelsea")], "texts": [
        {"user": "Question: What animal is shown?\nChoices:\nA. dog\nB. cat", "assistant": "cat", "source": "IconQA"}]}]})
    (sample,) = _samples(list(CauldronSource(path=str(root), subset="iconqa").iter_rows()))
    assert sample.answers == ["cat", "B"]
    assert sample.constraint == WORD


# ---- later turns of a dialogue -------------------------------------------------------------------


def _revenue(tmp_path: Path) -> Path:
    return fixtures.cauldron(tmp_path / "cauldron", {"vistext": [{"images": [fixtures.chart({"2018": 40, "2019": 55})], "texts": [
        {"user": "What was the revenue in 2018?", "assistant": "40", "source": "VisText"},
        {"user": "And in 2019?", "assistant": "55", "source": "VisText"}]}]})


def test_a_cauldron_follow_up_turn_carries_the_earlier_turns_as_context(tmp_path: Path) -> None:
    first, second = _samples(list(CauldronSource(path=str(_revenue(tmp_path)), subset="vistext").iter_rows()))
    assert first.question == "What was the revenue in 2018?"
    assert second.question == (f"{CONTEXT_HEADER}\nQ: What was the revenue in 2018?\nA: 40\n\n"
                               f"{CONTEXT_QUESTION}And in 2019?")
    assert second.answers == ["55"]
    assert second.meta["context_turns"] == 1


def test_later_turns_skip_quarantines_each_follow_up_with_a_counted_reason_in_a_build(tmp_path: Path) -> None:
    result, quarantine = _build(tmp_path, {"name": "cauldron", "path": str(_revenue(tmp_path)), "subset": "vistext",
                                           "later_turns": "skip"})
    assert [(q["reason"], q["row"]) for q in quarantine] == [("later_turn_skipped", "vistext[0] turn 1")]
    counts = result.manifest.yield_by_source["cauldron/vistext"]
    assert (counts.generated, counts.reasons["later_turn_skipped"]) == (1, 1)


def test_a_llava_cot_second_turn_carries_the_first_turns_conclusion(tmp_path: Path) -> None:
    _, second = _samples(list(LlavaCoTSource(path=str(fixtures.llava_cot(tmp_path)), subset="chartqa").iter_rows()))
    assert second.question.startswith(f"{CONTEXT_HEADER}\nQ: How many units were sold in 2021?\nA: 25\n\n")
    assert second.question.endswith("Which year sold the fewest units?")


def test_a_llava_cot_later_turn_is_skipped_with_its_reason_when_asked(tmp_path: Path) -> None:
    rows = list(LlavaCoTSource(path=str(fixtures.llava_cot(tmp_path)), subset="chartqa", later_turns="skip").iter_rows())
    assert [s.id for s in _samples(rows)] == ["llava_cot/chartqa/chartqa_1/0"]
    skipped = [(r.reason, r.row) for r in rows if isinstance(r, Rejected) and r.reason != "no_image"]
    assert skipped == [("later_turn_skipped", "train.jsonl:1 turn 1")]


def test_a_three_turn_llava_dialogue_gives_the_third_turn_both_earlier_pairs(tmp_path: Path) -> None:
    fixtures.save(fixtures.photo("astronaut"), tmp_path / "a.jpg")
    fixtures.write_jsonl(tmp_path / "chat.jsonl", [{"id": "d1", "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is the person wearing?"}, {"from": "gpt", "value": "A spacesuit"},
        {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "White"},
        {"from": "human", "value": "And the flag on it?"}, {"from": "gpt", "value": "American"}]}])
    *_, third = _samples(list(LlavaSource(path=str(tmp_path / "chat.jsonl")).iter_rows()))
    assert third.question == (f"{CONTEXT_HEADER}\nQ: What is the person wearing?\nA: A spacesuit\n"
                              f"Q: What colour is it?\nA: White\n\n{CONTEXT_QUESTION}And the flag on it?")
    assert third.id == "llava/d1/2"
