"""``mmat critique``: critics over existing traces, without regenerating them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat_core.cli import main
from mmat_core.errors import ConfigError
from mmat_core.models import Trace
from mmat_core.pipeline import Pipeline


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished offline run over the five chart samples."""
    out = tmp_path_factory.mktemp("critique") / "run"
    Pipeline(source={"name": "sample", "subsets": ["chart"]}, llm="offline", tools=[], search=False,
             critics=["answer_match"], formatters=["rr"]).run_local(out)
    return out


def critique(*args: str) -> object:
    return CliRunner().invoke(main, ["critique", *args], catch_exceptions=True)


def test_critique_rescores_a_run_directory_and_prints_the_verdicts(run_dir: Path) -> None:
    result = critique(str(run_dir), "--critics", "answer_match,quality")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Critiqued 5 traces"
    assert lines[2].split() == ["answer_match", "5", "0", "0", "1.000"]
    assert lines[3].split() == ["quality", "5", "0", "0", "0.800"]  # the offline judge's fixed score


def test_a_stricter_threshold_drops_samples_in_the_written_traces(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rescored.jsonl"
    result = critique(str(run_dir), "--critics", "quality", "--set", "reflection.quality_threshold=0.9", "-o", str(out))
    assert result.exit_code == 0, result.output
    traces = [Trace.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [t.status for t in traces] == ["dropped"] * 5
    assert all(t.failure.startswith("quality: quality score 0.8 below 0.9") for t in traces)
    # The earlier answer_match verdict stays beside the new one.
    assert [v.critic for v in traces[0].verdicts] == ["answer_match", "quality"]


def test_critique_never_regenerates(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "again.jsonl"
    critique(str(run_dir), "--critics", "answer_match", "-o", str(out))
    before = {t.id: t.steps for t in (Trace.model_validate_json(x) for x in out.read_text().splitlines())}
    critique(str(out), "--critics", "general,math", "-o", str(tmp_path / "third.jsonl"))
    after = {t.id: t.steps for t in (Trace.model_validate_json(x) for x in (tmp_path / "third.jsonl").read_text().splitlines())}
    assert after == before


def test_a_traces_file_with_a_bad_line_is_critiqued_and_the_line_reported(run_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    critique(str(run_dir), "--critics", "answer_match", "-o", str(good))
    lines = good.read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([lines[0], '{"id": "x", "messages": []}', lines[1]]) + "\n")
    result = critique(str(mixed), "--critics", "answer_match", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["traces"] == 2 and report["verdicts"] == {"answer_match": {"pass": 2}}
    assert report["unreadable"][0]["where"] == "mixed.jsonl:2"
    assert report["unreadable"][0]["reason"].startswith("not a Trace:")
    assert report["yield_by_source"]["sample/chart"]["kept"] == 2


def test_a_directory_without_a_run_store_is_explained(tmp_path: Path) -> None:
    result = critique(str(tmp_path), "--critics", "answer_match")
    assert isinstance(result.exception, ConfigError)
    assert "no run store (run.sqlite) in" in str(result.exception)


def test_an_unknown_critic_lists_the_available_ones(run_dir: Path) -> None:
    result = critique(str(run_dir), "--critics", "qualty")
    assert isinstance(result.exception, ConfigError)
    assert "Unknown critic 'qualty'. Did you mean 'quality'?" in str(result.exception)


def test_the_output_may_not_overwrite_the_input(run_dir: Path, tmp_path: Path) -> None:
    traces = tmp_path / "t.jsonl"
    critique(str(run_dir), "--critics", "answer_match", "-o", str(traces))
    result = critique(str(traces), "--critics", "answer_match", "-o", str(traces))
    assert isinstance(result.exception, ConfigError) and "--out must differ from the input" in str(result.exception)
