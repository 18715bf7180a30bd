"""JSON Schema checks of model replies and tool arguments, compiled once per schema.

Building a ``jsonschema`` validator for every step and every tool call, and walking it over a
reply that is almost always valid, was a tenth of a run's time. :func:`schema_errors` keeps one
validator per schema and, for the keywords the step and tool schemas use, first runs a quick
check compiled to plain Python closures. The quick check only ever answers "certainly valid" or
"not sure": when it is not sure, the real validator runs and its errors (with its wording) are
what the caller reports. So the answer is always exactly ``jsonschema``'s; only the common valid
case is fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

#: Keywords that never change whether an instance is valid.
_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly"})

_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    # Stricter than JSON Schema (2.0 is an integer there): a miss only means "not sure".
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) is int or type(v) is float,
}


class _Unsupported(Exception):
    """The schema uses a keyword the quick check does not implement."""


def _compile(schema: Any) -> Check:
    """A function that returns True only for instances ``schema`` certainly accepts."""
    if schema is True or schema == {}:
        return lambda v: True
    if not isinstance(schema, dict):
        raise _Unsupported(repr(schema))
    unknown = set(schema) - _ANNOTATIONS - {"type", "properties", "required", "additionalProperties", "items",
                                            "anyOf", "enum", "minLength"}
    if unknown:
        raise _Unsupported(", ".join(sorted(unknown)))
    checks: list[Check] = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not all(isinstance(k, str) and k in _TYPES for k in kinds):
            raise _Unsupported(f"type {kinds}")
        if any(k in ("integer", "number") for k in kinds):
            tests = [_TYPES[k] for k in kinds]
            checks.append(lambda v: any(test(v) for test in tests))
        else:  # one isinstance call (bool is only "boolean": True is no integer here)
            classes = tuple({"string": str, "object": dict, "array": list, "boolean": bool, "null": type(None)}[k] for k in kinds)
            checks.append(lambda v: isinstance(v, classes))
    if "enum" in schema:
        allowed = schema["enum"]
        if not isinstance(allowed, list):
            raise _Unsupported("enum")
        # jsonschema tells True from 1; comparing only same-typed strings and None keeps that.
        checks.append(lambda v: (v is None or type(v) is str) and any(type(e) is type(v) and e == v for e in allowed))
    if "minLength" in schema:
        least = schema["minLength"]
        if type(least) is not int:
            raise _Unsupported("minLength")
        checks.append(lambda v: not isinstance(v, str) or len(v) >= least)
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise _Unsupported("properties")
    compiled = {name: _compile(sub) for name, sub in properties.items()}
    required = schema.get("required", [])
    if not isinstance(required, list):
        raise _Unsupported("required")
    extra = schema.get("additionalProperties", True)
    extra_check = None if extra is True else (_compile(extra) if extra is not False else None)
    closed = extra is False
    if compiled or required or extra is not True:

        def object_check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for name in required:
                if name not in v:
                    return False
            for name, value in v.items():
                check = compiled.get(name)
                if check is not None:
                    if not check(value):
                        return False
                elif closed or (extra_check is not None and not extra_check(value)):
                    return False
            return True

        checks.append(object_check)
    if "items" in schema:
        item = _compile(schema["items"])
        checks.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
    if "anyOf" in schema:
        options = [_compile(sub) for sub in schema["anyOf"]]
        checks.append(lambda v: any(option(v) for option in options))
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(check(v) for check in checks)


class CompiledSchema:
    """One schema's validator, built once, with its quick check (None when the schema uses
    keywords the quick check does not know)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema

        self.schema = schema
        self.validator = jsonschema.Draft202012Validator(schema)
        try:
            self.quick: Check | None = _compile(schema)
        except _Unsupported:
            self.quick = None

    def errors(self, instance: Any) -> list[Any]:
        """Every ``jsonschema`` error for ``instance`` (an empty list when it is valid)."""
        if self.quick is not None and self.quick(instance):
            return []
        return list(self.validator.iter_errors(instance))


_COMPILED: dict[int, CompiledSchema] = {}


def compiled(schema: dict[str, Any]) -> CompiledSchema:
    """The compiled form of ``schema``, built on first use (schemas are module or class constants,
    so the table stays as small as the number of tools)."""
    entry = _COMPILED.get(id(schema))
    if entry is None or entry.schema is not schema:
        entry = _COMPILED[id(schema)] = CompiledSchema(schema)
    return entry


def schema_errors(schema: dict[str, Any], instance: Any) -> list[Any]:
    """``list(Draft202012Validator(schema).iter_errors(instance))``, without rebuilding the
    validator and without walking it when the quick check already knows the instance is valid."""
    return compiled(schema).errors(instance)
