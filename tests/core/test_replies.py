"""mmat_core.replies: the one reader of a JSON object in a model's reply."""

from __future__ import annotations

import pytest

from mmat_core.engine.rationale import StepParseError, parse_step
from mmat_core.replies import ReplyJSONError, extract_json_object, strip_code_fence
from mmat_plugins.critics.judges import MalformedJudgement, parse_judgement
from mmat_plugins.llms.common import extract_json
from mmat_plugins.tools.caption import parse_scene_graph


def test_a_fenced_object_with_a_language_tag_is_read() -> None:
    assert extract_json_object('```jsonc\n{"a": 1}\n```') == {"a": 1}


def test_prose_around_the_object_is_tolerated() -> None:
    assert extract_json_object('Here it is: {"a": {"b": 2}} Hope this helps.') == {"a": {"b": 2}}


def test_a_fence_inside_the_reply_is_removed_too() -> None:
    assert strip_code_fence('Sure.\n```json\n[1, 2]\n```') == "Sure.\n[1, 2]"


def test_an_empty_reply_says_so() -> None:
    with pytest.raises(ReplyJSONError, match="^the reply was empty$"):
        extract_json_object("  ```\n```  ")


def test_a_reply_without_braces_has_no_json_object() -> None:
    with pytest.raises(ReplyJSONError, match="^no JSON object found$"):
        extract_json_object("I think it is fine.")


def test_invalid_json_names_the_parser_message_and_position() -> None:
    with pytest.raises(ReplyJSONError, match=r"^invalid JSON \(Expecting value at position 6\)$"):
        extract_json_object('{"a": broken}')


def test_a_reply_nested_past_the_parser_limit_is_invalid_json_not_a_crash() -> None:
    with pytest.raises(ReplyJSONError, match="nested deeper"):
        extract_json_object('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")


def test_the_engine_the_judges_the_backends_and_the_caption_read_a_fenced_object_alike() -> None:
    def fenced(body: str) -> str:
        return f"Here you are:\n```json\n{body}\n```"

    assert parse_step(fenced('{"thought": "t", "next_action": "continue"}'))["thought"] == "t"
    assert parse_judgement(fenced('{"reason": "r"}')) == {"reason": "r"}
    assert extract_json(fenced('{"answer": "4"}')) == {"answer": "4"}
    assert parse_scene_graph(fenced('{"objects": ["cat"]}'))["objects"] == ["cat"]


def test_each_caller_keeps_its_own_error() -> None:
    with pytest.raises(StepParseError, match="^no JSON object found$"):
        parse_step("no object")
    with pytest.raises(MalformedJudgement, match="^invalid JSON"):
        parse_judgement("{broken}")
    with pytest.raises(ValueError):
        extract_json("no object")
    assert parse_scene_graph("no object") == {"objects": [], "attributes": [], "relationships": []}
