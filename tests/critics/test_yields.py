"""Yield accounting on a small real run whose every model answer is scripted on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmat_core.cli.build import _summary
from mmat_core.config import PipelineConfig
from mmat_core.models import Provenance, Rejected, SourceSample, Trace
from mmat_core.pipeline import Pipeline, RunResult
from mmat_core.yields import YieldTally, yield_table
from tests.critics.conftest import Judge
from tests.critics.judge import CALL_COST, JUDGE_PRICE
from tests.fakes.openai_server import Reply

ANSWERS = {
    "highest sales": "April",
    "value for C": "35",                  # wrong (41 would pass: within 5 % of 42)
    "fewest visitors": "2020",
    "Oslo in May": "73",
    "fewest units on Saturday": "C",
    "backpack cost": "$15.25",
    "Ann and Chloe": "27",
    "Maple Street": "10:45",
    "most pizzas": "B",
}


@pytest.fixture
def scripted_run(judge: Judge, tmp_path: Path) -> RunResult:
    """Nine samples (charts and tables) with one outcome of each kind scripted."""
    script = judge.script
    script.answers = ANSWERS
    script.on("critic_general", {"reason": "April is named before the bars are compared."}, {}, question="highest sales")
    script.on("critic_general", Reply.status(400, "content policy"), question="Maple Street")
    script.on("critic_math", {"reason": "the subtraction is skipped", "thought": "$22.50 - $7.25 = $15.25."},
              {"reason": "", "thought": "null"}, question="backpack cost")
    script.on("critic_quality", {"quality_score": 0.3, "scoring_reason": "never looks at the chart"},
              question="fewest visitors")
    config = PipelineConfig.model_validate({
        "llm_engine": {"prices": {"judge-1": JUDGE_PRICE}},
        "engine": {"concurrency": 4, "final_answer": "model"},  # the scripted answers are what answer_match checks
    })
    pipeline = Pipeline(
        source={"name": "sample", "subsets": ["chart", "table"]}, llm=judge.backend(), tools=[], search=False,
        critics=["answer_match", "general", "math", "quality"], formatters=["rr"], config=config,
    )
    return pipeline.run_local(tmp_path / "run")


def test_run_json_counts_each_outcome_by_sub_dataset(scripted_run: RunResult) -> None:
    data = json.loads((scripted_run.out_dir / "run.json").read_text())["yield_by_source"]
    chart, table = data["sample/chart"], data["sample/table"]
    assert {k: chart[k] for k in ("generated", "passed", "reflected", "flagged", "failed_verification", "dropped", "failed", "kept")} == {
        "generated": 5, "passed": 2, "reflected": 1, "flagged": 0, "failed_verification": 1, "dropped": 2, "failed": 0, "kept": 3}
    assert chart["reflected_by"] == {"general": 1}
    assert chart["reasons"] == {"answer_match": 1, "quality": 1}
    assert {k: table[k] for k in ("generated", "passed", "reflected", "dropped", "failed", "kept")} == {
        "generated": 4, "passed": 2, "reflected": 1, "dropped": 0, "failed": 1, "kept": 3}
    assert table["reflected_by"] == {"math": 1}
    assert table["reasons"] == {"critic_llm_error": 1}


def test_the_source_row_sums_its_sub_datasets(scripted_run: RunResult) -> None:
    total = scripted_run.manifest.yield_by_source["sample"]
    assert (total.read, total.generated, total.kept, total.passed, total.reflected, total.dropped, total.failed) == (9, 9, 6, 4, 2, 2, 1)
    assert total.reflected_by == {"general": 1, "math": 1}


def test_cost_covers_every_call_and_is_divided_by_kept_samples(scripted_run: RunResult, judge: Judge) -> None:
    priced_calls = sum(1 for r in judge.server.completions() if r.status == 200)
    total = scripted_run.manifest.yield_by_source["sample"]
    assert total.cost_usd == pytest.approx(priced_calls * CALL_COST)
    assert total.cost_per_kept_usd == pytest.approx(total.cost_usd / 6, abs=1e-6)
    chart = scripted_run.manifest.yield_by_source["sample/chart"]
    table = scripted_run.manifest.yield_by_source["sample/table"]
    assert chart.cost_usd + table.cost_usd == pytest.approx(total.cost_usd)


def test_only_kept_samples_reach_the_training_data(scripted_run: RunResult) -> None:
    lines = (scripted_run.out_dir / "rr.jsonl").read_text().splitlines()
    assert len(lines) == 6
    reflected = next(json.loads(line) for line in lines if json.loads(line)["id"] == "sample/table-001")
    assert any("<SIGNAL>reflection</SIGNAL>" in m["content"] for m in reflected["messages"])
    assert any("$22.50 - $7.25 = $15.25." in m["content"] for m in reflected["messages"])


def test_build_prints_the_yield_table_at_the_end(scripted_run: RunResult, capsys: pytest.CaptureFixture[str]) -> None:
    _summary(scripted_run)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("sample/chart"))
    assert row.split()[1:11] == ["5", "0", "5", "2", "1", "0", "1", "2", "0", "3"]
    assert "sample: reflected by general 1, math 1; reasons: answer_match 1, critic_llm_error 1, quality 1" in out


def sample_trace(status: str, subset: str = "a", failure: str | None = None) -> Trace:
    sample = SourceSample(id=f"s/{status}", source="src", subset=subset, question="q", answers=["x"])
    trace = Trace(id=sample.id, sample=sample, status=status, failure=failure,  # type: ignore[arg-type]
                  provenance=Provenance(mmat_version="t", generator="g", offline=True, source="src", subset=subset))
    trace.usage.cost_usd = 0.5
    return trace


def test_tally_counts_quarantined_rows_and_leaves_cost_per_kept_empty_without_kept_samples() -> None:
    tally = YieldTally().add_all(
        [sample_trace("dropped", failure="quality: low")],
        [Rejected(source="src", subset="a", row="f:1", reason="image_missing")],
    )
    counts = tally.result()["src/a"]
    assert (counts.read, counts.rejected, counts.generated, counts.kept) == (2, 1, 1, 0)
    assert counts.reasons == {"image_missing": 1, "quality": 1}
    assert counts.cost_usd == 0.5 and counts.cost_per_kept_usd is None
    assert yield_table(tally.result())[1].split()[-1] == "-"


def test_flagged_samples_count_as_kept_and_flagged() -> None:
    counts = YieldTally().add_all([sample_trace("flagged", failure="general: unresolved")]).result()["src"]
    assert (counts.kept, counts.flagged, counts.passed, counts.reasons) == (1, 1, 0, {"general": 1})
