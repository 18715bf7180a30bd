"""The suite's bookkeeping: lmms-eval's results read as they are, put on one scale, printed as the paper's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mmat_plugins.evaluation.lmms import suite
from mmat_plugins.evaluation.lmms.runner import selected

from mmat_core import ConfigError

SPECS = {spec.key: spec for spec in suite.PAPER_BENCHMARKS}


def test_the_eight_columns_are_the_papers_benchmarks_in_its_order() -> None:
    assert [spec.title for spec in suite.PAPER_BENCHMARKS] == [
        "MMStar", "MMMU", "MathVista", "MathVision", "AI2D", "OCRBench", "RealWorldQA", "HallusionBench"]


def test_fractions_are_scaled_to_percent_and_percentages_kept() -> None:
    results = {"mmstar": {"average,none": 0.5, "average_stderr,none": "N/A"},
               "mathvista_testmini_format": {"llm_as_judge_eval,none": 50.0}}
    assert suite.metric_value(results, SPECS["mmstar"]) == 50.0
    assert suite.metric_value(results, SPECS["mathvista"]) == 50.0


def test_hallusionbench_is_the_mean_of_its_three_accuracies_as_vlmevalkit_reports_it() -> None:
    results = {"hallusion_bench_image": {"aAcc,none": 60.0, "fAcc,none": 30.0, "qAcc,none": 30.0}}
    assert suite.metric_value(results, SPECS["hallusionbench"]) == 40.0


def test_a_null_mathvista_score_is_zero_because_lmms_eval_returns_none_for_no_right_answer() -> None:
    assert suite.metric_value({"mathvista_testmini_format": {"llm_as_judge_eval,none": None}}, SPECS["mathvista"]) == 0.0


def test_the_filter_suffix_of_a_metric_key_is_accepted() -> None:
    assert suite.metric_value({"ai2d": {"exact_match,flexible-extract": 1.0}}, SPECS["ai2d"]) == 100.0


def test_a_missing_task_or_metric_names_what_is_there() -> None:
    with pytest.raises(suite.ResultsError, match="no task 'ocrbench'; tasks present: ai2d"):
        suite.metric_value({"ai2d": {}}, SPECS["ocrbench"])
    with pytest.raises(suite.ResultsError, match="no metric 'exact_match'.*keys: other,none"):
        suite.metric_value({"ai2d": {"other,none": 1}}, SPECS["ai2d"])


def test_the_newest_results_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "20240101_results.json").write_text(json.dumps({"results": {"old": {}}}))
    newest = tmp_path / "m" / "20250101_results.json"
    newest.write_text(json.dumps({"results": {"new": {}}}))
    import os
    os.utime(newest, (2e9, 2e9))
    assert suite.read_results(tmp_path) == {"new": {}}


def test_no_results_file_is_an_error_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(suite.ResultsError, match=str(tmp_path)):
        suite.read_results(tmp_path)


def test_the_table_prints_benchmarks_as_columns_the_average_and_the_papers_rows_with_na() -> None:
    row = suite.SuiteRow(label="tuned (rr)", scores={spec.key: 50.0 for spec in suite.PAPER_BENCHMARKS} | {"dynvqa": 40.0})
    table = suite.render_table([row], suite.reference_rows(["plain", "rr"]), suite.PAPER_BENCHMARKS, [suite.DYNVQA])
    lines = table.splitlines()
    assert lines[0] == ("| model | MMStar | MMMU | MathVista | MathVision | AI2D | OCRBench | RealWorldQA | "
                        "HallusionBench | Avg | Dyn-VQA |")
    assert lines[2] == "| tuned (rr) | " + "50.0 | " * 9 + "40.0 |"
    assert lines[3] == "| InternVL2.5-8B (paper) | " + "n/a | " * 8 + "60.7 | 35.2 |"
    assert lines[4] == "| InternVL2.5-8B + RR (paper) | " + "n/a | " * 8 + "63.4 | 44.0 |"


def test_the_average_is_not_printed_when_a_benchmark_is_missing() -> None:
    row = suite.SuiteRow(label="x", scores={"mmstar": 10.0})
    assert row.average(["mmstar", "mmmu"]) is None


def test_an_unknown_benchmark_key_is_a_config_error_listing_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="unknown mmbench; allowed: mmstar, mmmu"):
        selected(["mmstar", "mmbench"])


def test_local_data_gets_a_dataset_cache_of_the_run_and_offline_switches(tmp_path: Path) -> None:
    # datasets keys a local parquet folder's cache by folder name, not path: two MathVista copies collided.
    from mmat_plugins.evaluation.lmms.runner import SuiteOptions, lmms_environment

    env = lmms_environment(SuiteOptions(modes=["rr"], out=tmp_path, data_root=tmp_path), "http://127.0.0.1:1/v1", "judge")
    assert env["HF_DATASETS_CACHE"] == str(tmp_path / "hf-datasets-cache")
    assert env["HF_DATASETS_OFFLINE"] == "1" and env["MODEL_VERSION"] == "judge" and env["PYTHONPATH"] == ""


def test_the_lmms_eval_command_points_its_openai_model_at_the_agent_and_appends_extra_arguments(tmp_path: Path) -> None:
    from mmat_plugins.evaluation.lmms.runner import SuiteOptions, lmms_command

    options = SuiteOptions(modes=["rr"], out=tmp_path, limit=2, lmms_python="py",
                           lmms_args=["--gen_kwargs=max_new_tokens=16"])
    command = lmms_command(options, "http://127.0.0.1:5/v1", "mmat-eval:rr", ["a", "b"], tmp_path / "tasks", tmp_path / "o")
    assert command[:5] == ["py", "-m", "lmms_eval", "--model", "openai"]
    assert command[6].startswith("model_version=mmat-eval:rr,base_url=http://127.0.0.1:5/v1,")
    assert command[command.index("--tasks") + 1] == "a,b" and command[-3:] == ["--limit", "2", "--gen_kwargs=max_new_tokens=16"]


def test_with_fewer_than_eight_benchmarks_no_row_prints_an_average() -> None:
    # Seen in the GPU check's subset run: an "Avg" of six columns sat above the paper's eight-column 60.7.
    subset = [SPECS["mmstar"], SPECS["ai2d"]]
    row = suite.SuiteRow(label="tiny (rr)", scores={"mmstar": 50.0, "ai2d": 0.0})
    lines = suite.render_table([row], suite.reference_rows(["plain"]), subset).splitlines()
    assert lines[2] == "| tiny (rr) | 50.0 | 0.0 | n/a |"
    assert lines[3] == "| InternVL2.5-8B (paper) | n/a | n/a | n/a |"


def test_a_python_without_lmms_eval_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import sys

    from mmat_plugins.evaluation.lmms.runner import SuiteOptions, run_suite

    with pytest.raises(ConfigError, match="lmms-eval is not installed for .*--lmms-python"):
        run_suite(SuiteOptions(modes=["rr"], out=tmp_path / "out", lmms_python=sys.executable,
                               benchmarks=["mmstar"]))
    assert not (tmp_path / "out" / "serve.log").exists()


def test_requests_lmms_eval_gave_up_on_are_found_in_its_log(tmp_path: Path) -> None:
    # lmms-eval scores a failed request as an empty answer; the run must not pass that off as a score.
    from mmat_plugins.evaluation.lmms.runner import failed_requests

    log = tmp_path / "lmms-eval.log"
    log.write_text("Model Responding: 0%\n2026 | ERROR | lmms_eval.models.chat.openai:process_single_request:140 - "
                   "All 2 attempts failed. Last error: Error code: 500 - the agent run failed\nresults table\n")
    assert failed_requests(log) == ["Error code: 500 - the agent run failed"]
    assert failed_requests(tmp_path / "absent.log") == []
