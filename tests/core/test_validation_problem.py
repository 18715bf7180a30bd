"""first_validation_problem: a pydantic error as the one-line reason a quarantined row carries."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from mmat_core.errors import first_validation_problem


class Item(BaseModel):
    question: str
    answer: list[str]


def _error(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Item.model_validate(data)
    return caught.value


def test_the_reason_names_the_first_problem_by_its_dotted_key() -> None:
    assert first_validation_problem(_error({"question": "Q?", "answer": ["a", 3]})) == "answer.1: Input should be a valid string"


def test_a_value_that_is_not_an_object_is_named_as_the_whole_row() -> None:
    assert first_validation_problem(_error([1, 2])).startswith("(row): Input should be")
    assert first_validation_problem(_error([1, 2]), whole="(line)").startswith("(line): ")
