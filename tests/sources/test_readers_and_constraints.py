"""The streaming JSON reader and the response-style constraint rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmat_plugins.sources import readers
from mmat_core.authoring.sources import choose_constraint, letter_answer, parse_choices
from mmat_plugins.sources.readers import RowError, iter_json_items


def test_big_json_object_is_streamed_item_by_item_across_buffer_refills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "CHUNK_CHARS", 7)  # force a refill inside every item
    data = {str(i): {"question": f"q{i} " * (i % 5), "n": i * 1001} for i in range(50)}
    (tmp_path / "d.json").write_text(json.dumps(data, indent=1))
    items = list(iter_json_items(tmp_path / "d.json"))
    assert [(ref, value) for ref, value in items] == [(f"d.json#{k}", v) for k, v in data.items()]


def test_numbers_at_a_buffer_edge_are_not_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "CHUNK_CHARS", 3)
    (tmp_path / "n.json").write_text("[123456789, 42]")
    assert [v for _, v in iter_json_items(tmp_path / "n.json")] == [123456789, 42]


def test_an_item_with_invalid_utf8_is_quarantined_alone(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_bytes(b'[{"q": "ok"}, {"q": "caf\xe9"}, {"q": "fine"}]')
    values = [v if not isinstance(v, RowError) else v.reason for _, v in iter_json_items(tmp_path / "d.json")]
    assert values == [{"q": "ok"}, "invalid_utf8", {"q": "fine"}]


def test_a_truncated_file_ends_with_an_invalid_json_error(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text('{"a": {"q": 1}, "b": {"q": ')
    items = list(iter_json_items(tmp_path / "d.json"))
    assert items[0] == ("d.json#a", {"q": 1})
    assert isinstance(items[-1][1], RowError) and items[-1][1].reason == "invalid_json"


@pytest.mark.parametrize(("answer", "choices", "expected"), [
    ("B", True, "\nAnswer with the option's letter from the given choices directly."),
    ("42", False, "\nAnswer the question using a single word or phrase."),
    ("New York City", False, "\nAnswer the question using a single word or phrase."),
    ("the man on the left is holding a red umbrella", False, "\nGive a short answer"),
    ("The picture shows a busy street at night with many people walking past shops and a bus", False, ""),
])
def test_constraint_is_chosen_by_rule(answer: str, choices: bool, expected: str) -> None:
    assert choose_constraint(answer, choices) == expected


def test_a_forced_constraint_or_none_overrides_the_rule() -> None:
    assert choose_constraint("a long answer with many many words in it for sure yes", False, "short") == "\nGive a short answer"
    assert choose_constraint("B", True, "none") == ""


def test_choices_are_parsed_from_lettered_lines_and_answers_mapped_to_letters() -> None:
    choices = parse_choices("Question: Which?\nChoices:\nA. red\nB. blue\nAnswer with the letter.")
    assert choices == ["red", "blue"]
    assert letter_answer("Answer: B", choices) == "B"
    assert letter_answer("blue", choices) == "B"
    assert letter_answer("green", choices) is None
