"""JSON Schemas generated from the pydantic models, and validation of files against them.

``schemas/`` in the repository holds the generated files (``mmat schemas --write schemas``); a
test fails when a model and its checked-in schema drift.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mmat_core import models
from mmat_core.config import PipelineConfig
from mmat_core.errors import MmatError

#: Schema name -> model. Formatter plugins add their own export schemas via ``EXTRA_SCHEMAS``.
MODEL_SCHEMAS: dict[str, type[BaseModel]] = {
    "source_sample": models.SourceSample,
    "trace": models.Trace,
    "rr_record": models.RRRecord,
    "orr_record": models.ORRRecord,
    "rejected": models.Rejected,
    "run_manifest": models.RunManifest,
    "pipeline_config": PipelineConfig,
}

#: Hand-written or plugin-provided schemas (name -> JSON Schema), e.g. export layouts.
EXTRA_SCHEMAS: dict[str, dict[str, Any]] = {}

#: Hand-written JSON Schemas of the export layouts (``mmat validate --schema export_ms_swift``).
# schemas/ is installed as the package mmat_schemas (see pyproject), so this works from a wheel too.
EXPORT_SCHEMA_DIR = Path(importlib.import_module("mmat_schemas").__file__).resolve().parent / "exports"  # type: ignore[arg-type]
for _path in sorted(EXPORT_SCHEMA_DIR.glob("*.schema.json")):
    EXTRA_SCHEMAS[_path.name.removesuffix(".schema.json")] = json.loads(_path.read_text(encoding="utf-8"))


def schema_for(name: str) -> dict[str, Any]:
    """The JSON Schema called ``name``."""
    if name in MODEL_SCHEMAS:
        schema = MODEL_SCHEMAS[name].model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://mmat.dev/schemas/{name}.schema.json"
        return schema
    if name in EXTRA_SCHEMAS:
        return EXTRA_SCHEMAS[name]
    from mmat_core.errors import UnknownComponentError

    raise UnknownComponentError("schema", name, list(MODEL_SCHEMAS) + list(EXTRA_SCHEMAS))


def all_schema_names() -> list[str]:
    """Every known schema name."""
    return sorted([*MODEL_SCHEMAS, *EXTRA_SCHEMAS])


def render(schema: dict[str, Any]) -> str:
    """The canonical text of a schema file."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write every model schema into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(MODEL_SCHEMAS):
        path = directory / f"{name}.schema.json"
        path.write_text(render(schema_for(name)), encoding="utf-8")
        written.append(path)
    return written


@dataclass
class Problem:
    """One validation failure."""

    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "document"
        return f"{where}: {self.field or '(root)'}: {self.message}"


class UnknownSchemaError(MmatError):
    """No schema could be guessed for a file."""


def guess_schema(path: Path, first: dict[str, Any] | None) -> str:
    """Pick a schema from the file name and the first record's keys."""
    name = path.name.lower()
    if name == "run.json":
        return "run_manifest"
    if name.startswith("quarantine"):
        return "rejected"
    if first is None:
        return "rr_record"
    keys = set(first)
    if "messages" in keys:
        return "orr_record" if "orr" in name else "rr_record"
    if "steps" in keys and "sample" in keys:
        return "trace"
    if "reason" in keys and "row" in keys:
        return "rejected"
    if "question" in keys and "answers" in keys:
        return "source_sample"
    if {"mmat_version", "run_id", "config"} <= keys:
        return "run_manifest"
    raise UnknownSchemaError(
        f"{path}: no schema of mmat matches this file (first record's keys: {', '.join(sorted(keys)[:8])}); "
        "name one with --schema (see `mmat schemas --list`)"
    )


def _problems(validator: Any, record: Any, line: int | None) -> Iterator[Problem]:
    for error in sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path)):
        field = ".".join(str(p) for p in error.absolute_path)
        yield Problem(line, field, error.message)


def validate_file(path: Path, schema_name: str | None = None) -> tuple[str, int, list[Problem]]:
    """Validate a JSON or JSONL file; returns (schema used, records checked, problems)."""
    import jsonschema

    text_lines: list[tuple[int, Any]] = []
    problems: list[Problem] = []
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return schema_name or "?", 0, [Problem(None, "", f"not valid JSON: {exc}")]
        records = document if isinstance(document, list) and path.name != "run.json" else [document]
        text_lines = [(None, r) for r in records]  # type: ignore[misc]
    else:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    text_lines.append((number, json.loads(raw.decode("utf-8"))))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    problems.append(Problem(number, "", f"not valid JSON: {exc}"))
    first = next((r for _, r in text_lines if isinstance(r, dict)), None)
    name = schema_name or guess_schema(path, first)
    validator = jsonschema.Draft202012Validator(schema_for(name))
    for line, record in text_lines:
        problems.extend(_problems(validator, record, line))
    problems.sort(key=lambda p: (p.line or 0))
    return name, len(text_lines), problems
