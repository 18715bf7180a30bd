"""RecordSource.dialogue_samples: the one place a dialogue's turns become samples (all dialogue sources use it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mmat_core import RecordSource, RowError
from mmat_core.models import ImageRef, Rejected, SourceSample

IMAGE = ImageRef(sha256="0" * 64, path="chart.png")


class Dialogues(RecordSource):
    """A tiny source whose records are lists of (question, answer) pairs, or an error at a turn."""

    name = "dialogues"

    def __init__(self, records: list[Any], **options: Any) -> None:
        super().__init__(None, **options)
        self.records = records

    def iter_records(self) -> Iterator[tuple[str, str | None, Any]]:
        for n, record in enumerate(self.records):
            yield f"d:{n}", None, record

    def normalise(self, ref: str, subset: str | None, record: Any) -> list[SourceSample | Rejected]:
        def turns() -> Iterator[tuple[str, str]]:
            for pair in record:
                if pair is None:
                    raise RowError("field_type", "a turn is not a pair")
                yield pair

        return self.dialogue_samples(ref, subset, ref.split(":")[1], turns(), images=[IMAGE], task_type="vqa",
                                     tags=["math"])


def test_a_later_turn_carries_the_earlier_pairs_before_its_question() -> None:
    first, second = Dialogues([[("What was the revenue in 2018?", "40"), ("And in 2019?", "45")]]).iter_rows()
    assert (first.question, first.meta.get("context_turns")) == ("What was the revenue in 2018?", None)
    assert second.question.endswith("Now answer this follow-up question: And in 2019?")
    assert "Q: What was the revenue in 2018?\nA: 40" in second.question
    assert (second.id, second.meta["context_turns"], second.tags) == ("dialogues/0/1", 1, ["math"])


def test_a_later_turn_is_rejected_with_its_reason_under_later_turns_skip() -> None:
    rows = list(Dialogues([[("Q1?", "a"), ("Q2?", "b")]], later_turns="skip").iter_rows())
    assert isinstance(rows[0], SourceSample)
    assert isinstance(rows[1], Rejected) and (rows[1].reason, rows[1].row) == ("later_turn_skipped", "d:0 turn 1")


def test_an_answer_naming_an_option_makes_a_multiple_choice_sample() -> None:
    (sample,) = Dialogues([[("Which is larger?\nA. 3\nB. 5", "B")]]).iter_rows()
    assert (sample.task_type, sample.answers, sample.choices) == ("multiple_choice", ["B"], ["3", "5"])


@pytest.mark.parametrize("bad_turn", [0, 1])
def test_a_bad_turn_quarantines_the_whole_row(bad_turn: int) -> None:
    record: list[Any] = [("Q1?", "a"), ("Q2?", "b")]
    record[bad_turn] = None
    (row,) = Dialogues([record]).iter_rows()
    assert isinstance(row, Rejected) and row.reason == "field_type"
