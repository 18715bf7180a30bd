"""The option rows of ``mmat sources`` and ``mmat tools`` are read from the pydantic fields and
are the rows the JSON Schema gives, for every component the built-in plugins register."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from mmat_core.cli.options import option_rows, rows_from_fields, rows_from_schema
from mmat_core.components import ComponentOptions
from mmat_core.plugins import PluginManager

MANAGER = PluginManager(allow=["builtins"])
COMPONENTS = [(family, name, cls) for family, registry in MANAGER.load().registries.items()
              for name, cls in registry.items()]


@pytest.mark.parametrize(("family", "name", "cls"), COMPONENTS, ids=[f"{f}:{n}" for f, n, _ in COMPONENTS])
def test_the_rows_read_from_the_fields_are_the_rows_of_the_json_schema(family: str, name: str, cls: Any) -> None:
    assert rows_from_fields(cls.Options) == rows_from_schema(cls.Options.model_json_schema())


class Nested(BaseModel):
    key: str = "id"


class Every(ComponentOptions):
    text: str = Field("a", description="a string")
    count: int | None = None
    ratio: float = 0.5
    flag: bool = True
    names: list[str] | None = Field(None, description="a list or nothing")
    mode: Literal["fast", "slow"] = "fast"
    loose: str | dict[str, Any] = "x"
    nested: Nested = Field(default_factory=Nested)
    maybe_nested: Nested | None = None
    needed: str = Field(description="required")


def test_every_kind_of_option_reads_as_the_schema_shows_it() -> None:
    rows = rows_from_fields(Every)
    assert rows == rows_from_schema(Every.model_json_schema())
    assert rows["mode"]["type"] == "fast | slow"
    assert rows["maybe_nested"]["type"] == "? | null"
    assert rows["nested"] == {"type": "object", "required": False, "description": ""}
    assert rows["needed"]["required"] is True


class Aliased(ComponentOptions):
    model_name: str = Field("m", alias="model")


def test_an_option_with_an_alias_is_read_from_the_schema() -> None:
    assert option_rows(Aliased) == rows_from_schema(Aliased.model_json_schema())
    assert list(option_rows(Aliased)) == ["model"]
