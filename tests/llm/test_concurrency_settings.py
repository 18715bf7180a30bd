"""One concurrency setting a user tunes: ``llm_engine.concurrency`` (model calls in flight).
``engine.concurrency`` (samples in flight) follows it unless set, and a set value that would
hold calls below it is warned about instead of capping them silently."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from PIL import Image

from mmat_core.config import PipelineConfig, load_config
from mmat_core.engine.settings import ConcurrencyWarning
from mmat_core.pipeline import Pipeline
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.llm.test_chat_engine import count_in_flight
from tests.scale.conftest import stub_manager  # noqa: F401  (a fixture)


def test_unset_engine_concurrency_is_twice_llm_engine_concurrency():
    assert PipelineConfig(llm_engine={"concurrency": 10}).engine.concurrency == 20


def test_the_default_keeps_the_default_call_slots_full():
    config = PipelineConfig()
    assert config.engine.concurrency == 2 * config.llm_engine.concurrency


def test_the_generators_per_model_concurrency_counts():
    config = PipelineConfig(llm={"name": "openai", "model": "gpt-4o-mini"},
                            llm_engine={"concurrency": 8, "per_model": {"openai:gpt-4o-mini": {"concurrency": 50}}})
    assert config.engine.concurrency == 100


def test_a_per_model_concurrency_counts_when_the_model_is_left_at_its_default():
    config = PipelineConfig(llm={"name": "openai"}, llm_engine={"per_model": {"openai:gpt-4o": {"concurrency": 100}}})
    assert config.engine.concurrency == 200


def test_an_engine_concurrency_that_is_set_is_kept():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PipelineConfig(engine={"concurrency": 300}).engine.concurrency == 300


def test_engine_concurrency_below_llm_engine_concurrency_warns_and_names_both():
    with pytest.warns(ConcurrencyWarning, match=r"engine.concurrency=4 .* llm_engine.concurrency=64 is never reached"):
        config = PipelineConfig(engine={"concurrency": 4})
    assert config.engine.concurrency == 4


def test_batch_mode_does_not_warn_about_a_small_engine_concurrency():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PipelineConfig(engine={"concurrency": 4}, llm_engine={"mode": "batch"})


def test_a_derived_engine_concurrency_is_stored_unset_and_derived_again_on_reload():
    stored = PipelineConfig(llm_engine={"concurrency": 10}).model_dump(mode="json")
    assert stored["engine"]["concurrency"] is None
    stored["llm_engine"]["concurrency"] = 30  # a resume with --set llm_engine.concurrency=30
    assert PipelineConfig.model_validate(stored).engine.concurrency == 60


def test_a_set_engine_concurrency_is_stored_as_set():
    stored = PipelineConfig(engine={"concurrency": 200}).model_dump(mode="json")
    assert stored["engine"]["concurrency"] == 200


def test_a_build_keeps_llm_engine_concurrency_calls_in_flight(stub_manager, tmp_path: Path):  # noqa: F811
    # 40 call slots, more than the 32 samples that engine.concurrency used to default to.
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 20, 30)).save(buffer, format="PNG")
    picture = tmp_path / "picture.png"
    picture.write_bytes(buffer.getvalue())
    with FakeOpenAIServer(latency=0.05) as server:
        server.responder = lambda request: Reply.json({"thought": "The answer is plain.", "operators": [],
                                                       "rag": {"needed": False, "query": None},
                                                       "next_action": "final_answer"})
        in_flight = count_in_flight(server)
        config = load_config(None, {"llm_engine.concurrency": 40, "llm_engine.progress": False,
                                    "llm_engine.adaptive": False})
        pipeline = Pipeline(source={"name": "generated", "count": 120, "image": str(picture)},
                            llm={"name": "openai", "base_url": server.base_url, "model": "gpt-4o"},
                            tools=[], critics=["answer_match"], formatters=["rr"], search=False, config=config)
        result = pipeline.run(tmp_path / "run")
    assert result.manifest.counts["finished"] == 120
    assert in_flight["max"] == 40


def test_critique_keeps_the_llm_engine_limits_for_its_judges(tmp_path: Path):
    from mmat_core.run import critique
    from mmat_core.run.review import critique_config

    out = tmp_path / "run"
    Pipeline(source={"name": "sample", "subsets": ["chart"]}, llm="offline", tools=[], search=False,
             critics=["answer_match"], formatters=["rr"]).run_local(out)
    with FakeOpenAIServer(latency=0.05) as server:
        server.responder = lambda request: Reply.json({"quality_score": 0.9, "scoring_reason": "fine"})
        in_flight = count_in_flight(server)
        config = critique_config(out, overrides={
            "critics": ["quality"], "llm": {"name": "openai", "base_url": server.base_url, "model": "gpt-4o"},
            "llm_engine.concurrency": 2, "llm_engine.adaptive": False})
        report = critique(out, config, cache_path=tmp_path / "judge-cache.sqlite")
    assert report.traces == 5
    assert len(server.completions()) == 5
    assert in_flight["max"] == 2


def test_the_cli_prints_the_concurrency_warning_as_one_warning_line(tmp_path: Path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mmat_core", "build", "--dry-run", "--set", "engine.concurrency=4"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Warning: engine.concurrency=4 keeps at most 4 samples in flight")
    assert len(lines) == 1, lines  # no `config.py:146: ConcurrencyWarning:` prefix, no source line after it


def test_the_build_summary_names_engine_concurrency_when_it_binds(tmp_path: Path):
    from click.testing import CliRunner

    from mmat_core.cli import main

    result = CliRunner().invoke(main, ["build", "--limit", "2", "-o", str(tmp_path / "run"), "--set",
                                       "engine.concurrency=4", "--set", "llm_engine.progress=false"])
    assert result.exit_code == 0, result.output
    [limits] = [line for line in result.output.splitlines() if line.strip().startswith("limits:")]
    assert "binding limit is engine.concurrency=4" in limits
    assert "raise llm_engine.concurrency" not in limits


def test_the_build_summary_keeps_the_schedulers_advice_when_engine_concurrency_is_unset(tmp_path: Path):
    from click.testing import CliRunner

    from mmat_core.cli import main

    result = CliRunner().invoke(main, ["build", "--limit", "1", "-o", str(tmp_path / "run"),
                                       "--set", "llm_engine.progress=false"])
    assert result.exit_code == 0, result.output
    assert "no limit binds" in result.output and "engine.concurrency=" not in result.output


def test_every_command_prints_mmats_warnings_as_one_line(tmp_path: Path):
    # `mmat critique` reloads a run's stored config (engine.concurrency=4) and warns again: one
    # clean line there too, not Python's `config.py:146: ConcurrencyWarning:` and a source line.
    import subprocess
    import sys

    def mmat(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mmat_core", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, check=False)

    built = mmat("build", "--limit", "1", "-o", "run", "--set", "engine.concurrency=4", "--set", "llm_engine.progress=false")
    assert built.returncode == 0, built.stderr
    critique = mmat("critique", "run", "--critics", "answer_match")
    assert critique.returncode == 0, critique.stderr
    assert critique.stderr.splitlines() == [line for line in critique.stderr.splitlines() if line.startswith("Warning: ")]
    assert "Warning: engine.concurrency=4" in critique.stderr
