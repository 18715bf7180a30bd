"""JSON Schemas: generated from the models, checked in, and used by `mmat validate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mmat_core.schemas import MODEL_SCHEMAS, render, schema_for, validate_file

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def test_checked_in_schemas_match_the_models() -> None:
    for name in MODEL_SCHEMAS:
        path = SCHEMA_DIR / f"{name}.schema.json"
        assert path.exists(), f"missing {path}; run `mmat schemas --write schemas`"
        assert path.read_text(encoding="utf-8") == render(schema_for(name)), (
            f"{path.name} drifted from mmat_core.models; run `mmat schemas --write schemas`")


def good_record() -> dict:
    """The smallest RR record valid in shape and in structure (validate checks both)."""
    turns = [("system", "s"), ("user", "q Please start your reasoning."), ("assistant", "<THOUGHT>t</THOUGHT><SIGNAL>end</SIGNAL>"),
             ("user", "Based on the above information, please summarize and give the answer to the initial question: q"),
             ("assistant", "a")]
    return {"id": "a", "messages": [{"role": r, "content": c} for r, c in turns], "images": []}


def test_validate_reports_every_bad_line_with_number_and_field(tmp_path: Path) -> None:
    bad_role = good_record()
    bad_role["messages"][0]["role"] = "robot"
    missing = good_record()
    del missing["id"]
    lines = [json.dumps(good_record()), json.dumps(bad_role), "{not json", json.dumps(missing)]
    path = tmp_path / "rr.jsonl"
    path.write_text("\n".join(lines) + "\n")
    name, count, problems = validate_file(path)
    assert name == "rr_record" and count == 4  # the line that is not JSON is a record too
    assert [(p.line, p.field) for p in problems] == [(2, "messages.0.role"), (3, ""), (4, "")]
    assert "'robot' is not one of" in problems[0].message and "not valid JSON" in problems[1].message
    assert "'id' is a required property" in problems[2].message


def test_validate_command_exits_non_zero_and_names_lines(tmp_path: Path) -> None:
    path = tmp_path / "orr.jsonl"
    path.write_text(json.dumps({"id": "x", "messages": []}) + "\n")
    result = subprocess.run([sys.executable, "-m", "mmat_core", "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "line 1: messages:" in result.stderr and "1 of 1 record(s) invalid against orr_record" in result.stderr


def test_validate_with_an_explicit_schema(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"source": "s", "row": "r", "reason": "image_missing"}) + "\n")
    assert validate_file(path, "rejected")[2] == []
    assert validate_file(path, "source_sample")[2]
