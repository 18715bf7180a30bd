"""JSON Schemas generated from the pydantic models, and validation of files against them.

``schemas/`` in the repository holds the generated files (``mmat schemas --write schemas``); a
test fails when a model and its checked-in schema drift.

A JSON Schema checks a record's shape only. RR and ORR records are also checked turn by turn
(:func:`rr_structure_problems`, :func:`orr_structure_problems`): the order of the roles, the
order of the tags in each step, one ``<ANSWER>`` in ORR, signals in their set, a bare final
answer, and no format tag inside any text.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mmat_core import models, prompts
from mmat_core.config import PipelineConfig
from mmat_core.errors import MmatError
from mmat_core.jsonl import BadLine, iter_jsonl

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
    """One validation failure; ``record`` is the 1-based position of the record it concerns."""

    line: int | None
    field: str
    message: str
    record: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else f"record {self.record}" if self.record else "document"
        return f"{where}: {self.field or '(root)'}: {self.message}"


# ---- the structure of RR and ORR records -------------------------------------------------------

_STEP = re.compile(
    r"<THOUGHT>(?P<thought>.*?)</THOUGHT>(?:<OPERATOR>(?P<operators>.*?)</OPERATOR>)?(?:<RAG>(?P<rag>.*?)</RAG>)?"
    r"<SIGNAL>(?P<signal>.*?)</SIGNAL>",
    re.DOTALL,
)
_ORR_ANSWER = re.compile(r"<THOUGHT>(?P<thought>.*?)</THOUGHT><ANSWER>The answer is: (?P<answer>.*?)</ANSWER>", re.DOTALL)
_API_BLOCK = re.compile(r"<\|begin_api_invoke\|>(?P<operator>.*?)<\|end_api_invoke\|>"
                        r"<\|begin_result_of_api\|>(?P<result>.*?)<\|end_result_of_api\|>", re.DOTALL)
_ANSWER_OPEN = re.compile(r"<\s*ANSWER\s*>", re.IGNORECASE)
_SIGNALS = ("continue", "end", "reflection")
_FINAL_PREFIX = prompts.FINAL_TURN.split("{", 1)[0]


def _roles(messages: list[Any]) -> list[str] | None:
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        return None
    return [m.get("role") for m in messages]


def _tag_free(field: str, text: str, what: str) -> list[tuple[str, str]]:
    from mmat_core.formatting import find_format_tag

    tag = find_format_tag(text)
    return [(field, f"{what} holds the format tag {tag!r}")] if tag else []


def rr_structure_problems(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each way an RR record's dialogue breaks the RR layout.

    Roles: system, user, then (assistant step, user) pairs, the final question and a bare answer.
    Each step is ``<THOUGHT>`` ``<OPERATOR>``? ``<RAG>``? ``<SIGNAL>`` in that order, with a
    signal of continue, end or reflection; only the last step ends, and it ends with ``end``.
    No text inside a tag, no user turn and no final answer holds a format tag."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        return []  # the JSON Schema reports it
    roles = _roles(messages)
    if roles is None:
        return []
    expected = ["system", "user"] + ["assistant", "user"] * max(0, (len(messages) - 3) // 2) + ["assistant"]
    if len(messages) < 5 or len(messages) % 2 == 0 or roles != expected:
        return [("messages", "roles must be system, user, then assistant/user pairs, the final question (user) and the "
                             f"answer (assistant), at least 5 messages; got {', '.join(map(str, roles))}")]
    problems: list[tuple[str, str]] = []
    steps = range(2, len(messages) - 2, 2)
    for index in steps:
        content = messages[index]["content"]
        field = f"messages.{index}.content"
        match = _STEP.fullmatch(content)
        if match is None:
            problems.append((field, "a step must be <THOUGHT>..</THOUGHT>, then <OPERATOR>..</OPERATOR> and "
                                    "<RAG>..</RAG> when used, then <SIGNAL>..</SIGNAL>, and nothing else"))
            continue
        for part in ("thought", "operators", "rag"):
            if match.group(part) is not None:
                problems += _tag_free(field, match.group(part), f"the {part}")
        signal = match.group("signal")
        last = index == steps[-1]
        if signal not in _SIGNALS:
            problems.append((field, f"signal {signal!r} is not one of {', '.join(_SIGNALS)}"))
        elif last and signal != "end":
            problems.append((field, f"the last step before the final question must end with <SIGNAL>end</SIGNAL>, "
                                    f"not {signal!r}"))
        elif not last and signal == "end":
            problems.append((field, "only the last step may end with <SIGNAL>end</SIGNAL>"))
    for index in range(1, len(messages) - 1, 2):
        problems += _tag_free(f"messages.{index}.content", messages[index]["content"], "a user turn")
    if not messages[-2]["content"].startswith(_FINAL_PREFIX):
        problems.append((f"messages.{len(messages) - 2}.content", f"the final question must start with {_FINAL_PREFIX!r}"))
    problems += _tag_free(f"messages.{len(messages) - 1}.content", messages[-1]["content"],
                          "the final answer (a bare answer)")
    return problems


def orr_structure_problems(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each way an ORR record breaks the ORR layout: system, user,
    assistant; the user turn is the question, then optionally the API header and well-formed
    operator blocks; the assistant turn is exactly one ``<THOUGHT>`` and one ``<ANSWER>The answer
    is: X</ANSWER>``, with no format tag inside either."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        return []
    roles = _roles(messages)
    if roles is None:
        return []
    if roles != ["system", "user", "assistant"]:
        return [("messages", f"roles must be system, user, assistant; got {', '.join(map(str, roles))}")]
    problems: list[tuple[str, str]] = []
    question = messages[1]["content"]
    head, header, blocks = question.partition(prompts.ORR_API_HEADER)
    problems += _tag_free("messages.1.content", head, "the question")
    if header:
        position = 0
        for block in _API_BLOCK.finditer(blocks):
            if block.start() != position:
                break
            problems += _tag_free("messages.1.content", block.group("operator") + block.group("result"),
                                  f"the output of {block.group('operator')!r}")
            position = block.end()
        if position != len(blocks) or not blocks:
            problems.append(("messages.1.content", "after the API header come only "
                                                   "<|begin_api_invoke|>..<|end_result_of_api|> blocks"))
    answers = len(_ANSWER_OPEN.findall(messages[2]["content"]))
    match = _ORR_ANSWER.fullmatch(messages[2]["content"])
    if answers != 1:
        problems.append(("messages.2.content", f"holds {answers} <ANSWER> tags; an ORR answer has exactly one"))
    elif match is None:
        problems.append(("messages.2.content", "the answer must be exactly <THOUGHT>..</THOUGHT>"
                                               "<ANSWER>The answer is: ..</ANSWER>"))
    else:
        problems += _tag_free("messages.2.content", match.group("thought"), "the thought")
        problems += _tag_free("messages.2.content", match.group("answer"), "the answer")
    return problems


#: Schema name -> the turn-by-turn check run after the JSON Schema.
STRUCTURE_CHECKS = {"rr_record": rr_structure_problems, "orr_record": orr_structure_problems}


class UnknownSchemaError(MmatError):
    """No schema could be guessed for a file."""


#: Schemas a record is guessed against, in order of preference (exports by name).
GUESSABLE = ("rr_record", "orr_record", "trace", "rejected", "source_sample", "run_manifest")


def _looks_orr(record: dict[str, Any]) -> bool:
    messages = record.get("messages")
    return (isinstance(messages, list) and len(messages) == 3 and isinstance(messages[-1], dict)
            and "<ANSWER>" in str(messages[-1].get("content", "")))


def guess_schema(path: Path, first: dict[str, Any] | None) -> str:
    """Pick a schema from the first record's content (the file name only breaks ties).

    Every schema whose required keys the record has is tried; the first one it is valid against
    wins (RR or ORR by the dialogue's shape, an export whose name the file name holds before
    other exports). When none fits, the closest one (fewest errors) is used, so the report
    names what is wrong rather than a schema that was never meant."""
    import jsonschema

    name = path.name.lower()
    if name == "run.json":
        return "run_manifest"
    if name.startswith(("quarantine", "export_quarantine")):
        return "rejected"
    if name == "dataset_info.json":
        return "export_llama_factory_dataset_info"
    if name.endswith("_meta.json"):
        return "export_internvl_meta"
    if not isinstance(first, dict):
        raise UnknownSchemaError(f"{path}: no JSON object to guess a schema from; name one with --schema "
                                 "(see `mmat schemas --list`)")
    keys = set(first)
    candidates = [*GUESSABLE, *sorted(n for n in EXTRA_SCHEMAS if n.startswith("export_"))]
    scored: list[tuple[int, int, int, str]] = []
    for order, candidate in enumerate(candidates):
        schema = schema_for(candidate)
        required = set(schema.get("required") or ())
        if not required or not required <= keys:
            continue
        errors = sum(1 for _ in jsonschema.Draft202012Validator(schema).iter_errors(first))
        if candidate in ("rr_record", "orr_record"):
            # The dialogue's shape decides; a record too broken to show one goes by the file name.
            messages = first.get("messages")
            orr = _looks_orr(first) or (not (isinstance(messages, list) and len(messages) >= 5) and "orr" in name)
            hinted = (candidate == "orr_record") != orr
        else:
            hinted = candidate.removeprefix("export_") not in name
        scored.append((errors, int(hinted), order, candidate))
    if not scored:
        raise UnknownSchemaError(
            f"{path}: no schema of mmat matches this file (first record's keys: {', '.join(sorted(keys)[:8])}); "
            "name one with --schema (see `mmat schemas --list`)"
        )
    return min(scored)[3]


def _problems(validator: Any, record: Any, line: int | None, index: int | None, schema_name: str) -> Iterator[Problem]:
    shape_ok = True
    for error in sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path)):
        shape_ok = False
        field = ".".join(str(p) for p in error.absolute_path)
        yield Problem(line, field, error.message, index)
    structure = STRUCTURE_CHECKS.get(schema_name)
    if structure is not None and shape_ok:
        for field, message in structure(record):
            yield Problem(line, field, message, index)


def validate_file(path: Path, schema_name: str | None = None) -> tuple[str, int, list[Problem]]:
    """Validate a JSON or JSONL file; returns (schema used, records checked, problems).

    Every non-blank line of a JSONL file counts as a record, a line that is not JSON included."""
    import jsonschema

    text_lines: list[tuple[int, Any]] = []
    problems: list[Problem] = []
    array = False
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return schema_name or "?", 0, [Problem(None, "", f"not valid JSON: {exc}")]
        records = document if isinstance(document, list) and path.name != "run.json" else [document]
        text_lines = [(None, r) for r in records]  # type: ignore[misc]
        count = len(records)
        array = len(records) != 1 or records is document
    else:
        count = 0
        for number, value in iter_jsonl(path):
            count += 1
            if isinstance(value, BadLine):
                problems.append(Problem(number, "", f"not valid JSON: {value.error}", number))
            else:
                text_lines.append((number, value))
    first = next((r for _, r in text_lines if isinstance(r, dict)), None)
    if first is None and schema_name is None:
        return "(no schema: no record is a JSON object)", count, problems
    name = schema_name or guess_schema(path, first)
    validator = jsonschema.Draft202012Validator(schema_for(name))
    for index, (line, record) in enumerate(text_lines, 1):
        # A JSONL record is known by its line; a JSON array's by its position; a lone document by neither.
        problems.extend(_problems(validator, record, line, line if line is not None else index if array else None, name))
    problems.sort(key=lambda p: (p.line or 0, p.record or 0))
    return name, count, problems
