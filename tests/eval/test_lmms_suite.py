"""`mmat eval --suite paper` end to end: lmms-eval (its own environment) with its OpenAI-compatible model
against `mmat serve`, the agent behind it a scripted tuned model, on the local fixtures of all eight
benchmarks plus Dyn-VQA, in all three modes. One lmms-eval process per mode covers every task.

The figures asserted are lmms-eval's: read from the results files lmms-eval wrote, and from the
table mmat printed out of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mmat_plugins.evaluation.lmms import suite
from mmat_plugins.evaluation.lmms.fixtures import fixture_answers
from PIL import Image

from mmat_core.cli import main
from tests.consumers import consumer_python
from tests.eval.conftest import judge_reply
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.vlm_server import FakeVLM, step

pytestmark = pytest.mark.slow

#: What the scripted model scores: every answer right. OCRBench's lmms-eval score is points out of
#: the full benchmark's 1000, so two right answers are 0.2.
EXPECTED = {"mmstar": 100.0, "mmmu": 100.0, "mathvista": 100.0, "mathvision": 100.0, "ai2d": 100.0,
            "ocrbench": 0.2, "realworldqa": 100.0, "hallusionbench": 100.0, "dynvqa": 100.0}
GOLDEN = "How many humans have landed on Mars?"


def write_dynvqa(folder: Path) -> Path:
    """One released-layout Dyn-VQA question (answers of mixed types) with its image."""
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(folder / "images" / "image_125.jpeg")
    row = {"image_url": "https://example.org/x/image_125.jpeg", "question": "How many humans have landed on this planet?",
           "question_id": "en34", "answer": ["目前还没有人类去过火星。", 0, "No humans have been to Mars yet."],
           "gloden_query": GOLDEN}
    (folder / "DynVQA_en.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n")
    return folder / "DynVQA_en.jsonl"


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[tuple[Any, Path, FakeVLM, FakeOpenAIServer]]:
    """One `mmat eval --suite paper --mode all` run, shared by the tests of this module (it takes minutes)."""
    tmp_path = tmp_path_factory.mktemp("suite")
    dynvqa = write_dynvqa(tmp_path / "dynvqa")
    with pytest.MonkeyPatch.context() as patch, FakeOpenAIServer() as judge, FakeVLM(protocol="rr") as tuned_model:
        patch.setenv("OPENAI_API_KEY", "test-key")  # the served model's endpoint key and the judge backend's
        judge.responder = judge_reply
        for question, answer in fixture_answers().items():
            tuned_model.script(question, [step("Read the picture first.", ["ocr"]), step("That settles it.", final=True)],
                               answer=answer)
        tuned_model.script(GOLDEN, [step("Mars has had no visitors.", final=True)], answer="No humans have been to Mars yet.")
        out = tmp_path / "eval"
        result = CliRunner().invoke(main, [
            "eval", "--suite", "paper", "--mode", "all", "--model", "tuned", "--endpoint", tuned_model.base_url,
            "--tools", "ocr", "--data-root", str(data_root), "--limit", "2",
            "--lmms-python", str(consumer_python("lmms")), "--judge", "openai", "--judge-option", "model=judge",
            "--judge-option", f"base_url={judge.base_url}", "--dynvqa", str(dynvqa), "-o", str(out)])
        yield result, out, tuned_model, judge


def test_every_benchmark_runs_through_lmms_eval_in_each_mode_and_the_table_is_printed(suite_run: tuple) -> None:
    result, out, _, _ = suite_run
    assert result.exit_code == 0, result.output + "\n" + "\n".join(
        p.read_text()[-3000:] for p in out.glob("*/lmms-eval.log"))
    # The figures come from lmms-eval's own results files, one per mode, every task in each.
    for mode in ("plain", "rr", "orr"):
        results = suite.read_results(out / mode / "lmms")
        assert set(results) == {f"mmat_local_{spec.task}" for spec in suite.PAPER_BENCHMARKS} | {"mmat_dynvqa_golden"}
        scores = json.loads((out / "summary.json").read_text())["modes"][mode]["scores"]
        assert scores == EXPECTED, mode
        assert sorted(p.name.split("_samples_")[1] for p in (out / mode / "lmms").rglob("*_samples_*.jsonl")) == sorted(
            f"{task}.jsonl" for task in results)
    # The printed table: the paper's columns, one row per mode, the paper's rows under them.
    lines = result.output.splitlines()
    assert lines[0].startswith("| model | MMStar | MMMU | MathVista | MathVision | AI2D | OCRBench | RealWorldQA | "
                               "HallusionBench | Avg | Dyn-VQA |")
    assert "| tuned (rr) | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 0.2 | 100.0 | 100.0 | 87.5 | 100.0 |" in lines
    assert "| InternVL2.5-8B + RR (paper) | " + "n/a | " * 8 + "63.4 | 44.0 |" in lines


def test_lmms_eval_is_answered_by_mmat_serve_in_the_mode_its_model_name_asks(suite_run: tuple) -> None:
    result, out, tuned_model, _ = suite_run
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    # The first answer is mmat's probe (one short plain question before lmms-eval starts).
    assert answers[0]["mode"] == "plain" and answers[0]["question"].startswith("Reply with one word.")
    answers = answers[1:]
    by_mode = {mode: [a for a in answers if a["mode"] == mode] for mode in ("plain", "rr", "orr")}
    assert {mode: len(rows) for mode, rows in by_mode.items()} == {"plain": 17, "rr": 17, "orr": 17}
    # RR answers come from the multi-turn loop with its tool: the OCR call is in each answer's trace.
    assert all(any(call["name"] == "ocr" for s in a["trace"]["steps"] for call in s["tool_calls"]) for a in by_mode["rr"]
               if a["question"] != GOLDEN)
    purposes = {r.purpose for r in tuned_model.requests}
    assert {"plain_answer", "orr_answer", "rationale_step", "final_answer"} <= purposes


def test_judge_calls_reach_the_judge_through_mmats_backend(suite_run: tuple) -> None:
    result, _, _, judge = suite_run
    assert result.exit_code == 0, result.output
    prompts = ["".join(m["content"] for m in r.body["messages"]) for r in judge.completions()]
    # MathVista's answer extraction (once per mode for its multiple-choice row) and HallusionBench's grading.
    assert sum("Extracted answer:" in p for p in prompts) == 3
    assert sum("Imagine you are an intelligent teacher" in p for p in prompts) == 6
    assert {r.body["model"] for r in judge.completions()} == {"judge"}


def test_an_agent_that_cannot_answer_stops_the_run_before_lmms_eval_starts(tmp_path: Path, data_root: Path) -> None:
    from mmat_plugins.evaluation.lmms.runner import EvalRunError, SuiteOptions
    from mmat_plugins.evaluation.lmms.runner import run_suite as run

    # The model's endpoint does not answer. Without the first question lmms-eval ran for minutes,
    # got HTTP 500 for every question and the table said 0.0 (mmat serve may also refuse at start).
    options = SuiteOptions(modes=["plain"], out=tmp_path / "out", data_root=data_root, benchmarks=["mmstar"],
                           lmms_python=str(consumer_python("lmms")), request_timeout_s=60,
                           serve_args=["--model", "m", "--endpoint", "http://127.0.0.1:9/v1", "--max-turns", "2"])
    with pytest.raises(EvalRunError, match=r"cannot answer \(HTTP 5\d\d\)|mmat serve stopped \(exit [1-9]"):
        run(options)
    assert not (tmp_path / "out" / "plain").exists()  # lmms-eval never started


def test_a_running_mmat_serve_is_used_by_url_and_answers_under_its_model_name(tmp_path: Path, data_root: Path) -> None:
    import re
    import subprocess
    import sys
    import time

    log = tmp_path / "serve.out"
    with log.open("wb") as handle:
        server = subprocess.Popen([sys.executable, "-c", "from mmat_core.cli import run; run()", "serve", "--model", "stand-in",
                                   "--backend", "offline", "--port", "0", "--log", str(tmp_path / "answers.jsonl")],
                                  stdout=handle, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            found = re.search(r"listening on (\S+)", log.read_text())
            if found:
                break
            time.sleep(0.2)
        assert found, log.read_text()
        result = CliRunner().invoke(main, [
            "eval", "--suite", "paper", "--mode", "plain", "--model", "stand-in", "--serve-url", found.group(1),
            "--benchmarks", "mmstar", "--data-root", str(data_root), "--limit", "1",
            "--lmms-python", str(consumer_python("lmms")), "-o", str(tmp_path / "eval")])
    finally:
        server.terminate()
        server.wait(20)
    assert result.exit_code == 0, result.output
    assert "| stand-in (plain) | 0.0 | n/a |" in result.output  # the stand-in answers "unknown"
    models = {json.loads(line)["model"] for line in (tmp_path / "answers.jsonl").read_text().splitlines()}
    assert models == {"stand-in:plain"}
    assert not (tmp_path / "eval" / "serve.log").exists()  # mmat eval started no server of its own
