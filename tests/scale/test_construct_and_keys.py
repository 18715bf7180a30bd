"""The hot path's shortcuts give exactly what the slow paths give."""

from __future__ import annotations

from mmat_core.components import LLMRequest, Message
from mmat_core.engine.cache import model_key_document
from mmat_core.construct import construct
from mmat_core.models import ModelCall, Step, Usage


def test_construct_matches_pydantic_model_construct() -> None:
    for cls, fields in (
        (Usage, {"prompt_tokens": 3, "completion_tokens": 4}),
        (ModelCall, {"purpose": "rationale_step", "backend": "offline", "model": "m", "usage": Usage(calls=1)}),
        (Step, {"thought": "t", "operators": ["ocr"], "signal": "end"}),
    ):
        fast, slow = construct(cls, **fields), cls.model_construct(**fields)
        assert fast.__dict__ == slow.__dict__ and list(fast.__dict__) == list(slow.__dict__)
        assert fast.model_fields_set == slow.model_fields_set
        assert fast.model_dump_json() == slow.model_dump_json()


def test_factory_defaults_are_fresh_objects_each_time() -> None:
    first, second = construct(Step, thought="a"), construct(Step, thought="b")
    first.operators.append("ocr")
    assert second.operators == []


def request(system: str) -> LLMRequest:
    return LLMRequest(purpose="rationale_step", messages=[Message(role="system", content=system),
                                                           Message(role="user", content="q")])


def test_system_prompt_enters_the_key_as_a_hash_that_changes_with_it() -> None:
    one = model_key_document("offline", "m", request("You reason. The answer is 42."))
    two = model_key_document("offline", "m", request("You reason. The answer is 43."))
    assert str(one["messages"][0]["content"]).startswith("sha256:")
    assert one["messages"][0] != two["messages"][0] and one["messages"][1] == two["messages"][1]
