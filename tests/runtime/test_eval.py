"""`mmat eval` and `mmat infer` against the scripted fake server, and a local transformers model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mmat_plugins.agent import AgentRuntime, OpenAIChatModel
from mmat_plugins.evaluation.scoring import evaluate, read_bench

from mmat_core.cli import main
from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply
from tests.runtime.conftest import scripted, user_texts


@pytest.fixture
def bench(tmp_path: Path, photos: dict[str, Path]) -> Path:
    """Two good questions, one with a missing image, one without answers."""
    rows = [
        {"id": "faces", "question": "How many faces are there?", "answer": "1", "image": str(photos["astronaut"]),
         "constraint": "Answer the question using a single word or phrase.", "source": "demo", "subset": "people"},
        {"id": "animal", "question": "What animal is this?", "answers": ["cat", "kitten"], "image": str(photos["chelsea"]),
         "source": "demo", "subset": "animals"},
        {"id": "lost", "question": "What is here?", "answer": "x", "image": "gone.png", "source": "demo"},
        {"id": "noanswer", "question": "Why?", "image": str(photos["chelsea"])},
    ]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def plain_answers(request: RecordedRequest) -> Reply:
    """A baseline that counts faces right and calls the cat a dog."""
    return Reply.text("1" if "faces" in user_texts(request)[-1] else "a dog")  # type: ignore[call-arg]


def test_bench_rows_are_validated_and_bad_ones_quarantined(bench: Path) -> None:
    samples, rejected = read_bench(bench)
    assert [s.id for s in samples] == ["faces", "animal"]
    assert samples[0].answers == ["1"] and samples[0].constraint.startswith("\nAnswer")
    assert [(r.reason, r.row.endswith(f"bench.jsonl:{n}")) for r, n in zip(rejected, (3, 4))] == [
        ("image_missing", True), ("invalid_row", True)]


def test_eval_scores_predictions_and_writes_the_summary(server: FakeOpenAIServer, bench: Path, tmp_path: Path) -> None:
    server.responder = plain_answers
    agent = AgentRuntime.from_names(OpenAIChatModel("base", server.base_url), tools=[], mode="plain")
    result = evaluate(agent, bench, tmp_path / "out")
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(p["id"], p["prediction"], p["correct"]) for p in predictions] == [("faces", "1", True), ("animal", "a dog", False)]
    assert result.overall.count == 2 and result.overall.accuracy == 0.5
    assert summary["overall"]["accuracy"] == 0.5 and summary["rejected"] == 2
    assert {g["group"]: g["accuracy"] for g in summary["groups"]} == {"demo": 0.5, "demo/animals": 0.0, "demo/people": 1.0}
    assert "answer_match" in summary["metrics"]
    assert "| all | 2 | 1 | 50.0% |" in (tmp_path / "out" / "summary.md").read_text()
    assert len((tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()) == 2


def test_eval_in_rr_mode_counts_steps_and_operator_calls(server: FakeOpenAIServer, bench: Path, tmp_path: Path) -> None:
    server.responder = scripted([
        "<THOUGHT>Check faces.</THOUGHT><OPERATOR>face_detection</OPERATOR><SIGNAL>continue</SIGNAL>",
        "<THOUGHT>Done.</THOUGHT><SIGNAL>end</SIGNAL>",
        "cat",
    ])
    agent = AgentRuntime.from_names(OpenAIChatModel("tuned", server.base_url), tools=["face_detection"], mode="rr")
    result = evaluate(agent, bench, tmp_path / "out", concurrency=2)
    traces = [json.loads(line) for line in (tmp_path / "out" / "traces.jsonl").read_text().splitlines()]
    assert result.overall.operator_calls == {"face_detection": 2}
    assert result.overall.steps_sum == 4 and [p.correct for p in result.predictions] == [False, True]
    assert [t["id"] for t in traces] == ["faces", "animal"]


def test_mmat_eval_prints_the_table(server: FakeOpenAIServer, bench: Path, tmp_path: Path) -> None:
    server.responder = plain_answers
    result = CliRunner().invoke(main, ["eval", "--model", "base", "--endpoint", server.base_url, "--mode", "plain",
                                       "--tools", "", "--data", str(bench), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "| all | 2 | 1 | 50.0% |" in result.output
    assert (tmp_path / "out" / "predictions.jsonl").exists()


def test_mmat_infer_prints_steps_and_answer(server: FakeOpenAIServer, photos: dict[str, Path], tmp_path: Path) -> None:
    server.responder = scripted([
        "<THOUGHT>Look for faces.</THOUGHT><OPERATOR>face_detection</OPERATOR><SIGNAL>continue</SIGNAL>",
        "<THOUGHT>One face.</THOUGHT><SIGNAL>end</SIGNAL>",
        "1",
    ])
    trace_file = tmp_path / "trace.json"
    result = CliRunner().invoke(main, ["infer", "--model", "tuned", "--endpoint", server.base_url, "--tools", "face_detection",
                                       "--image", str(photos["astronaut"]), "--question", "How many faces?",
                                       "--trace", str(trace_file)])
    assert result.exit_code == 0, result.output
    assert "face_detection: There is one face with a coordinate:" in result.output
    assert result.output.strip().endswith("Answer: 1")
    assert json.loads(trace_file.read_text())["final_answer"] == "1"


def test_local_model_loads_an_hf_lora_adapter_folder_and_runs_the_loop(tmp_path: Path, photos: dict[str, Path]) -> None:
    from mmat_plugins.agent import TransformersChatModel
    from mmat_plugins.trainers.hf_lora import HFLoraTrainer
    from mmat_plugins.trainers.tiny import build_tiny_vlm

    from tests.train.records import write_training_files

    rr, _ = write_training_files(tmp_path / "data", count=4)
    model_dir = build_tiny_vlm(tmp_path / "tiny")
    trained = HFLoraTrainer().train(data=rr, model=str(model_dir), output_dir=tmp_path / "run", preset="smoke",
                                    overrides={"max_steps": 1})
    agent = AgentRuntime.from_names(TransformersChatModel(trained.adapter_dir, max_new_tokens=6), tools=["face_detection"],
                                    max_turns=2)
    result = agent.run(photos["astronaut"], "How many faces?")
    # A random model writes no tags: its reply is taken as the thought and the loop ends cleanly.
    assert result.trace.status != "failed", result.trace.failure
    assert len(result.replies) == len(result.trace.steps) + 1
    assert result.trace.provenance.generator == f"runtime:{trained.adapter_dir}"


def test_mmat_eval_wants_exactly_one_of_data_and_suite(bench: Path, tmp_path: Path) -> None:
    for extra in ([], ["--data", str(bench), "--suite", "paper"]):
        result = CliRunner().invoke(main, ["eval", "--model", "m", "--out", str(tmp_path / "o"), *extra])
        assert result.exit_code != 0 and "exactly one of --data FILE" in str(result.exception or result.output)


def test_mode_all_is_refused_for_a_qa_file(bench: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "--model", "m", "--mode", "all", "--data", str(bench), "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--mode all runs with --suite paper only" in str(result.exception or result.output)


def test_the_suite_hands_the_model_options_to_mmat_serve_without_the_mode() -> None:
    from mmat_plugins.evaluation.command import _serve_args, evaluate_command

    args = _serve_args(evaluate_command, {"model": "tuned", "endpoint": "http://h/v1", "mode": "all", "tools": "ocr",
                                          "adapter": None, "max_turns": 8})
    assert args == ["--model", "tuned", "--endpoint", "http://h/v1", "--tools", "ocr", "--max-turns", "8"]


def test_a_judge_option_without_equals_sign_names_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "--model", "m", "--suite", "paper", "--judge-option", "model",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--judge-option 'model': expected KEY=VALUE" in str(result.exception or result.output)
