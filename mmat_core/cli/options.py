"""What ``mmat sources`` and ``mmat tools`` show of a component's options: per option its type,
whether it is required, its default and its description.

The rows are read from the pydantic fields of the ``Options`` model, which exist as soon as the
class does, instead of from its JSON Schema: generating a schema builds the model's validator
(mmat's models build on first use, see ``mmat_core.models.DEFER_BUILD``) and, on the first build
in a process, makes pydantic look for its own plugins among the installed distributions; a listing
needs neither. The rows are the ones the JSON Schema gives (``tests/core/test_cli_options.py``
compares them for every registered source and tool); an option whose type or settings this
reading does not cover (an alias, an extra schema, a type outside JSON's) is read from the schema.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

#: Python types and the JSON Schema type pydantic gives them.
_JSON_TYPES: dict[Any, str] = {
    str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null",
    list: "array", tuple: "array", set: "array", frozenset: "array", dict: "object",
}


class _Unsupported(Exception):
    """An option this reading does not cover: the caller reads the JSON Schema instead."""


def option_rows(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """Per option of ``model``: ``type``, ``required``, ``default`` (when it has a plain one) and
    ``description``, in declaration order."""
    try:
        return rows_from_fields(model)
    except _Unsupported:
        return rows_from_schema(model.model_json_schema())


def rows_from_schema(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The option rows of a JSON Schema (the reference the field reading must match)."""
    required = set(schema.get("required", []))
    rows = {}
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type") or " | ".join(p.get("type", "?") for p in prop.get("anyOf", []) if isinstance(p, dict))
        if "enum" in prop:
            kind = " | ".join(map(str, prop["enum"]))
        rows[name] = {
            "type": kind or "object",
            "required": name in required,
            **({"default": prop["default"]} if "default" in prop else {}),
            "description": prop.get("description", ""),
        }
    return rows


def rows_from_fields(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """The option rows read from ``model.model_fields``; raises _Unsupported for an option the
    JSON Schema might show differently."""
    rows = {}
    for name, field in model.model_fields.items():
        if field.alias or field.validation_alias or field.serialization_alias or field.json_schema_extra \
                or field.exclude or field.discriminator:
            raise _Unsupported(name)
        required = field.is_required()
        row: dict[str, Any] = {"type": _top_level_type(field.annotation), "required": required}
        if not required and field.default_factory is None and field.default is not PydanticUndefined:
            row["default"] = to_jsonable_python(field.default)
        row["description"] = field.description or ""
        rows[name] = row
    return rows


def _top_level_type(annotation: Any) -> str:
    """What the schema shows as an option's type: its JSON type, the values of a Literal, the
    JSON types of a union's members ('?' for a nested model), 'object' for a nested model."""
    if typing.get_origin(annotation) is Literal:
        return " | ".join(map(str, typing.get_args(annotation)))
    if _is_union(annotation):
        return " | ".join(_member_type(member) for member in typing.get_args(annotation))
    if _is_model(annotation):
        return "object"  # a $ref, which carries no type
    return _json_type(annotation)


def _member_type(annotation: Any) -> str:
    if _is_model(annotation):
        return "?"  # a $ref inside anyOf
    if typing.get_origin(annotation) is Literal:
        values = typing.get_args(annotation)
        kinds = {_json_type(type(value)) for value in values}
        if len(kinds) != 1:
            raise _Unsupported(annotation)
        return kinds.pop()
    if _is_union(annotation):
        raise _Unsupported(annotation)  # pydantic flattens nested unions its own way
    return _json_type(annotation)


def _json_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation) or annotation
    if origin is typing.Any:
        raise _Unsupported(annotation)  # no type at all in the schema
    try:
        return _JSON_TYPES[origin]
    except (KeyError, TypeError):
        raise _Unsupported(annotation) from None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
