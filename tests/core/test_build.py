"""The walking skeleton end to end: `mmat build` on the bundled sample, and the same in Python."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mmat_core import Pipeline
from mmat_core.plugins import PluginManager
from mmat_core.schemas import validate_file

MMAT = [sys.executable, "-c", "from mmat_core.cli import run; run()"]


def mmat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess."""
    return subprocess.run([*MMAT, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `mmat build --out DIR` over the bundled sample, shared by the tests below."""
    out = tmp_path_factory.mktemp("build") / "run"
    result = mmat("build", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_build_writes_rr_orr_and_run_json(sample_run: Path) -> None:
    assert {"rr.jsonl", "orr.jsonl", "run.json", "quarantine.jsonl"} <= {p.name for p in sample_run.iterdir()}
    manifest = json.loads((sample_run / "run.json").read_text())
    assert manifest["complete"] is True
    assert manifest["counts"]["kept"] == len(read_jsonl(sample_run / "rr.jsonl")) >= 18
    assert manifest["components"]["llm"]["name"] == "offline"
    assert {p["name"] for p in manifest["plugins"]} >= {"sources", "llms", "tools"}
    assert manifest["timings_s"]["total"] > 0


def test_outputs_pass_validation(sample_run: Path) -> None:
    for name, schema in (("rr.jsonl", "rr_record"), ("orr.jsonl", "orr_record"), ("run.json", "run_manifest")):
        used, count, problems = validate_file(sample_run / name)
        assert used == schema and count > 0 and problems == []
    assert mmat("validate", str(sample_run / "rr.jsonl")).returncode == 0


def test_records_are_marked_offline_with_their_licence(sample_run: Path) -> None:
    for record in read_jsonl(sample_run / "rr.jsonl"):
        assert record["provenance"]["offline"] is True
        assert record["provenance"]["generator"].startswith("offline:")
        assert record["provenance"]["licence"]
        assert record["images"] and Path(record["images"][0]).exists()


def test_rr_dialogue_follows_the_spec_templates(sample_run: Path) -> None:
    record = read_jsonl(sample_run / "rr.jsonl")[0]
    roles = [m["role"] for m in record["messages"]]
    assert roles[:2] == ["system", "user"] and roles[-2:] == ["user", "assistant"]
    assert record["messages"][1]["content"].endswith(" Please start your reasoning.")
    assert record["messages"][-2]["content"].startswith(
        "Based on the above information, please summarize and give the answer to the initial question: ")
    steps = [m["content"] for m in record["messages"] if m["role"] == "assistant"][:-1]
    assert all(s.startswith("<THOUGHT>") and "</THOUGHT>" in s and s.endswith("</SIGNAL>") for s in steps)
    assert steps[-1].endswith("<SIGNAL>end</SIGNAL>")


def test_offline_thoughts_quote_real_tool_outputs(sample_run: Path) -> None:
    ocr_records = [r for r in read_jsonl(sample_run / "rr.jsonl") if "<OPERATOR>ocr" in json.dumps(r)]
    assert ocr_records
    record = ocr_records[0]
    result_turn = next(m["content"] for m in record["messages"] if m["content"].startswith("Here are ocr results"))
    ocr_text = result_turn.removeprefix("Here are ocr results from the previous step: ").split(" Please continue")[0]
    assert len(ocr_text) > 3
    assert any(ocr_text[:40] in m["content"] for m in record["messages"] if m["role"] == "assistant")


def test_orr_has_api_blocks_and_answer(sample_run: Path) -> None:
    record = read_jsonl(sample_run / "orr.jsonl")[0]
    user, answer = record["messages"][1]["content"], record["messages"][2]["content"]
    assert "Use the following API outputs to help answer the question:<|begin_api_invoke|>" in user
    assert answer.startswith("<THOUGHT>") and "</THOUGHT><ANSWER>The answer is: " in answer
    assert answer.endswith("</ANSWER>")


def test_rerun_of_a_finished_run_makes_no_model_call(sample_run: Path) -> None:
    before = (sample_run / "rr.jsonl").read_bytes()
    result = mmat("build", "--out", str(sample_run))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((sample_run / "run.json").read_text())
    assert manifest["counts"]["model_calls"] == 0
    assert (sample_run / "rr.jsonl").read_bytes() == before


def test_programmatic_pipeline_with_objects_and_names(tmp_path: Path, manager: PluginManager,
                                                      tiny_source: Callable[[PluginManager], str]) -> None:
    name = tiny_source(manager)
    ocr = manager.create("tool", "ocr", max_side=640)
    result = Pipeline(source=name, llm="offline", tools=[ocr, "face_detection"], critics=["answer_match"],
                      formatters=["rr", "orr"], search=False).run(tmp_path / "run")
    assert result.manifest.counts["kept"] == 2
    assert result.manifest.counts["rejected"] == 1
    quarantine = read_jsonl(tmp_path / "run" / "quarantine.jsonl")
    assert quarantine[0]["reason"] == "image_missing"
    assert result.outputs["rr"].name == "rr.jsonl"


def test_third_party_plugin_is_listed_and_used_in_a_build(tmp_path: Path) -> None:
    pytest.importorskip("mmat_plugin_example", reason="examples/mmat-plugin-example is installed by .ci/run")
    listing = json.loads(mmat("plugins", "--json").stdout)
    example = next(p for p in listing if p["name"] == "example")
    assert example["distribution"] == "mmat-plugin-example"
    assert example["components"] == {"tool": ["image_stats"], "critic": ["thought_length"]}
    out = tmp_path / "run"
    result = mmat("--plugins", "builtins,example", "build", "--out", str(out), "--limit", "3",
                  "--tools", "ocr,image_stats", "--critics", "answer_match,thought_length")
    assert result.returncode == 0, result.stderr
    rr = (out / "rr.jsonl").read_text()
    assert "image_stats: measure the image" in rr  # the RR system prompt lists the plugin's operator
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["components"]["tools"][1]["plugin"] == "example"


def test_blocking_the_example_plugin_makes_its_tool_unknown(tmp_path: Path) -> None:
    pytest.importorskip("mmat_plugin_example")
    result = mmat("-p", "no:example", "build", "--out", str(tmp_path / "run"), "--tools", "image_stats")
    assert result.returncode == 2
    assert "Unknown tool 'image_stats'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_dry_run_counts_without_model_calls(tmp_path: Path) -> None:
    result = mmat("build", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "sample/chart" in result.stdout and "total" in result.stdout
