"""`mmat tools` and `mmat tool run`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mmat_core.cli import main
from tests.tools.conftest import render_text


def test_tools_lists_every_built_in_operator_with_its_argument_schema() -> None:
    result = CliRunner().invoke(main, ["tools", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert {"image_caption", "ocr", "face_detection", "label_bbox"} <= set(rows)
    assert rows["label_bbox"]["args_schema"]["properties"]["objects"]["type"] == "array"
    assert rows["face_detection"]["label"] == "face detection"


def test_tool_run_prints_the_call_as_json(tmp_path: Path) -> None:
    image = render_text(tmp_path / "sign.png", ["OPEN 24 HOURS"])
    result = CliRunner().invoke(main, ["tool", "run", "ocr", str(image)])
    assert result.exit_code == 0, result.output
    call = json.loads(result.output)
    assert (call["name"], call["result"], call["error"]) == ("ocr", "OPEN 24 HOURS", None)


def test_tool_run_with_arguments_the_schema_refuses_exits_non_zero(tmp_path: Path) -> None:
    image = render_text(tmp_path / "sign.png", ["OPEN"])
    result = CliRunner().invoke(main, ["tool", "run", "label_bbox", str(image), "--args", '{"objects": "cat"}',
                                       "--options", '{"detector": {"name": "http", "url": "http://127.0.0.1:9/x"}}'])
    assert result.exit_code == 1
    assert "invalid arguments for label_bbox at objects: 'cat' is not of type 'array'" in json.loads(result.output)["error"]


def test_tool_run_rejects_arguments_that_are_not_json(tmp_path: Path) -> None:
    image = render_text(tmp_path / "sign.png", ["OPEN"])
    result = CliRunner().invoke(main, ["tool", "run", "ocr", str(image), "--args", "{objects: [cat]}"])
    assert result.exit_code == 2 and "not JSON" in result.output
