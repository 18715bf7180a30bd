"""mmat_core.jsonl: the one JSONL reading loop, with a bad line quarantined or raised."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from mmat_core.jsonl import BadLine, JsonlLineError, iter_jsonl


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(data)
    return path


def test_blank_lines_are_skipped_and_lines_counted_from_one(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"a": 1}\n\n  \n[2]\r\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, [2])]


def test_a_line_that_is_not_utf8_is_a_bad_line_and_the_next_is_read(tmp_path: Path) -> None:
    rows = list(iter_jsonl(write(tmp_path, b'{"a": "\xff"}\n{"b": 2}\n')))
    assert isinstance(rows[0][1], BadLine) and rows[0][1].reason == "invalid_utf8"
    assert rows[0][1].detail == "byte 7: invalid start byte"
    assert rows[1] == (2, {"b": 2})


def test_a_line_that_is_not_json_keeps_the_parsers_words(tmp_path: Path) -> None:
    [(number, bad)] = list(iter_jsonl(write(tmp_path, b"\n{not json\n")))
    assert number == 2 and isinstance(bad, BadLine)
    assert (bad.reason, bad.message) == ("invalid_json", "Expecting property name enclosed in double quotes")
    assert bad.detail.startswith(bad.message + ": line 1 column 2")


def test_a_line_nested_past_the_parser_limit_is_too_deep_not_a_crash(tmp_path: Path) -> None:
    [(_, bad)] = list(iter_jsonl(write(tmp_path, b"[" * 100_000 + b"]" * 100_000 + b"\n")))
    assert isinstance(bad, BadLine) and bad.reason == "json_too_deep"


def test_raise_mode_names_the_file_and_line(tmp_path: Path) -> None:
    rows = iter_jsonl(write(tmp_path, b'{"a": 1}\n{oops\n'), on_error="raise")
    assert next(rows) == (1, {"a": 1})
    with pytest.raises(JsonlLineError, match=r"^rows\.jsonl:2: Expecting property name") as caught:
        next(rows)
    assert caught.value.number == 2 and caught.value.bad.reason == "invalid_json"


def test_a_validating_loads_reports_its_validation_error(tmp_path: Path) -> None:
    class Row(BaseModel):
        a: int

    rows = list(iter_jsonl(write(tmp_path, b'{"a": 1}\n{"a": "x"}\n'), loads=Row.model_validate_json))
    assert rows[0] == (1, Row(a=1))
    assert isinstance(rows[1][1], BadLine) and isinstance(rows[1][1].error, ValidationError)


def test_lines_already_in_memory_are_read_the_same_way() -> None:
    assert list(iter_jsonl('{"a": 1}\n\n{"b": 2}'.splitlines())) == [(1, {"a": 1}), (3, {"b": 2})]


def test_a_line_longer_than_the_cap_is_a_bad_line_and_the_next_is_read(tmp_path: Path) -> None:
    long_line = b'{"q": "' + b"x" * (5 * 1024 * 1024) + b'"}\n'
    path = write(tmp_path, b'{"a": 1}\n' + long_line + b'{"b": 2}\n')
    rows = list(iter_jsonl(path, max_line_bytes=1024 * 1024))
    assert rows[0] == (1, {"a": 1})
    assert isinstance(rows[1][1], BadLine) and rows[1][0] == 2 and rows[1][1].reason == "line_too_long"
    assert rows[2] == (3, {"b": 2})


def test_an_over_long_last_line_without_a_newline_is_a_bad_line(tmp_path: Path) -> None:
    rows = list(iter_jsonl(write(tmp_path, b'{"a": 1}\n' + b"y" * 4096), max_line_bytes=1000))
    assert rows[0] == (1, {"a": 1}) and rows[1][1].reason == "line_too_long" and len(rows) == 2


def test_a_line_exactly_at_the_cap_is_read(tmp_path: Path) -> None:
    line = b'{"q": "' + b"z" * 93 + b'"}'  # 102 bytes with its newline
    rows = list(iter_jsonl(write(tmp_path, line + b"\n"), max_line_bytes=len(line) + 1))
    assert rows == [(1, {"q": "z" * 93})]


def test_an_over_long_line_raises_naming_the_file_and_line_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path, b"[" + b"1," * 3000 + b"1]\n")
    with pytest.raises(JsonlLineError, match=r"rows\.jsonl:1: the line is longer than 1,000 bytes"):
        list(iter_jsonl(path, on_error="raise", max_line_bytes=1000))
