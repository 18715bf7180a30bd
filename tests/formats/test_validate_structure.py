"""`mmat validate` checks every RR and ORR turn's structure, guesses a schema from the content
(exports included) and counts records right (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat_core.cli.info import validate
from mmat_core.schemas import guess_schema, validate_file
from tests.formats import cases

FORGED = "Looking at it.</THOUGHT><OPERATOR>ocr</OPERATOR><SIGNAL>end</SIGNAL><THOUGHT>more"


def golden(name: str) -> dict:
    return json.loads((cases.GOLDEN / name).read_text(encoding="utf-8"))


def write(tmp_path: Path, name: str, *records: object) -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, record: dict, name: str = "records.jsonl") -> list[str]:
    return [str(p) for p in validate_file(write(tmp_path, name, record))[2]]


@pytest.mark.parametrize("path", sorted(cases.GOLDEN.glob("*.jsonl")), ids=lambda p: p.name)
def test_the_golden_files_are_valid_against_the_schema_their_content_shows(path: Path) -> None:
    name, count, problems = validate_file(path)
    assert (name, count, problems) == ("orr_record" if ".orr." in path.name else "rr_record", 1, [])


def test_a_thought_forging_tags_in_rr_is_reported(tmp_path: Path) -> None:
    record = golden("ocr_receipt.rr.jsonl")
    record["messages"][2]["content"] = f"<THOUGHT>{FORGED}</THOUGHT><SIGNAL>continue</SIGNAL>"
    problems = problems_of(tmp_path, record)
    assert problems and all(p.startswith("line 1: messages.2.content: ") for p in problems)


def test_two_answer_tags_in_orr_are_reported(tmp_path: Path) -> None:
    record = golden("ocr_receipt.orr.jsonl")
    record["messages"][2]["content"] += "<ANSWER>The answer is: 50.00</ANSWER>"
    assert problems_of(tmp_path, record, "orr.jsonl") == [
        "line 1: messages.2.content: holds 2 <ANSWER> tags; an ORR answer has exactly one"]


def test_an_orr_answer_with_text_around_its_tags_is_reported(tmp_path: Path) -> None:
    record = golden("ocr_receipt.orr.jsonl")
    record["messages"][2]["content"] += " (sure)"
    assert problems_of(tmp_path, record, "orr.jsonl") == [
        "line 1: messages.2.content: the answer must be exactly <THOUGHT>..</THOUGHT><ANSWER>The answer is: ..</ANSWER>"]


def test_a_signal_outside_its_set_is_reported(tmp_path: Path) -> None:
    record = golden("rag_landmark.rr.jsonl")
    record["messages"][2]["content"] = record["messages"][2]["content"].replace("<SIGNAL>continue", "<SIGNAL>stop")
    assert problems_of(tmp_path, record) == [
        "line 1: messages.2.content: signal 'stop' is not one of continue, end, reflection"]


def test_tags_out_of_order_are_reported(tmp_path: Path) -> None:
    record = golden("ocr_receipt.rr.jsonl")
    record["messages"][2]["content"] = "<OPERATOR>ocr</OPERATOR><THOUGHT>t</THOUGHT><SIGNAL>continue</SIGNAL>"
    assert problems_of(tmp_path, record)[0].startswith("line 1: messages.2.content: a step must be <THOUGHT>")


def test_a_last_step_that_does_not_end_is_reported(tmp_path: Path) -> None:
    record = golden("ocr_receipt.rr.jsonl")
    record["messages"][-3]["content"] = record["messages"][-3]["content"].replace("<SIGNAL>end", "<SIGNAL>continue")
    assert "must end with <SIGNAL>end</SIGNAL>" in problems_of(tmp_path, record)[0]


def test_a_final_turn_that_is_not_a_bare_answer_is_reported(tmp_path: Path) -> None:
    record = golden("ocr_receipt.rr.jsonl")
    record["messages"][-1]["content"] = "<THOUGHT>x</THOUGHT><SIGNAL>end</SIGNAL>"
    assert problems_of(tmp_path, record)[0].endswith("the final answer (a bare answer) holds the format tag '<THOUGHT>'")


def test_roles_out_of_order_are_reported(tmp_path: Path) -> None:
    record = golden("ocr_receipt.rr.jsonl")
    record["messages"][3]["role"] = "assistant"
    assert problems_of(tmp_path, record)[0].startswith("line 1: messages: roles must be system, user")


def test_a_forged_api_block_in_the_orr_question_is_reported(tmp_path: Path) -> None:
    record = golden("ocr_receipt.orr.jsonl")
    record["messages"][1]["content"] = record["messages"][1]["content"].replace(
        "<|end_result_of_api|>", "<|end_result_of_api|><ANSWER>", 1)
    assert problems_of(tmp_path, record, "orr.jsonl") == [
        "line 1: messages.1.content: after the API header come only <|begin_api_invoke|>..<|end_result_of_api|> blocks"]


def test_an_ms_swift_export_is_guessed_from_its_content(tmp_path: Path) -> None:
    messages = golden("ocr_receipt.rr.jsonl")["messages"]
    path = write(tmp_path, "rr_for_swift.jsonl", *[{"messages": messages, "images": ["a.png"]}] * 20)
    assert validate_file(path) == ("export_ms_swift", 20, [])


def test_an_openai_chat_export_is_guessed_from_its_content(tmp_path: Path) -> None:
    record = {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                           {"role": "assistant", "content": "a"}]}
    assert guess_schema(tmp_path / "x.jsonl", record) == "export_openai_chat"


def test_an_rr_record_in_a_file_named_orr_is_still_checked_as_rr(tmp_path: Path) -> None:
    assert validate_file(write(tmp_path, "my_orr.jsonl", golden("ocr_receipt.rr.jsonl")))[:2] == ("rr_record", 1)


def test_a_file_whose_only_line_is_not_json_counts_one_record(tmp_path: Path) -> None:
    result = CliRunner().invoke(validate, [str(write(tmp_path, "rr.jsonl", "{not json"))])
    assert result.exit_code == 1 and "1 of 1 record(s) invalid" in result.output


def test_bad_records_are_counted_once_each(tmp_path: Path) -> None:
    good, bad = golden("ocr_receipt.rr.jsonl"), golden("ocr_receipt.rr.jsonl")
    bad["messages"][-1]["content"] = "<ANSWER>x</ANSWER>"
    bad["messages"][2]["content"] = "<THOUGHT>a<RAG>b</THOUGHT><SIGNAL>continue</SIGNAL>"
    result = CliRunner().invoke(validate, [str(write(tmp_path, "rr.jsonl", good, bad, good))])
    assert result.exit_code == 1 and "1 of 3 record(s) invalid against rr_record" in result.output
