"""The offline backend calls every configured operator, third-party ones included, so a no-key
build shows a new tool's results in its RR data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmat_core import Pipeline
from mmat_core.components import Tool, ToolContext, ToolOutput
from mmat_core.config import PipelineConfig


class ProbeTool(Tool):
    """A tool no built-in heuristic would choose: it reports the sample's id."""

    name = "probe"
    version = "1"
    label = "probe"
    description = "report which sample is being looked at"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """The sample's id."""
        return ToolOutput(text=f"probe saw {ctx.sample.id}", data={"id": ctx.sample.id})


def rr_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_offline_build_calls_a_test_registered_tool_for_every_sample(tmp_path: Path) -> None:
    config = PipelineConfig(curation={"limit": 4})
    result = Pipeline(source="sample", llm="offline", tools=["ocr", ProbeTool()], critics=[], formatters=["rr"],
                      search=False, config=config).run(tmp_path / "run")
    records = rr_records(result.outputs["rr"])
    assert len(records) == 4
    for record in records:
        users = [m["content"] for m in record["messages"] if m["role"] == "user"]
        assert f"Here are probe results from the previous step: probe saw {record['id']}" in "\n".join(users)


def test_offline_build_calls_every_operator_once_per_sample(tmp_path: Path) -> None:
    config = PipelineConfig(curation={"limit": 3})
    result = Pipeline(source="sample", llm="offline", tools=["image_caption", "ocr", "face_detection", ProbeTool()],
                      critics=[], formatters=["rr"], search=False, config=config).run(tmp_path / "run")
    for record in rr_records(result.outputs["rr"]):
        text = "\n".join(m["content"] for m in record["messages"] if m["role"] == "user")
        for label in ("image caption", "ocr", "face detection", "probe"):
            assert text.count(f"Here are {label} results from the previous step") == 1, (label, record["id"])


def test_the_example_plugins_tool_shows_in_a_no_key_builds_rr_data(tmp_path: Path) -> None:
    pytest.importorskip("mmat_plugin_example", reason="examples/mmat-plugin-example is installed by .ci/run")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", "from mmat_core.cli import run; run()", "build", "--out", str(out),
                             "--limit", "2", "--tools", "ocr,image_stats"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for record in rr_records(out / "rr.jsonl"):
        users = [m["content"] for m in record["messages"] if m["role"] == "user"]
        assert any(text.startswith("Here are image stats results from the previous step: The image is ") for text in users)
