"""Crash-safe runs: a rerun keeps finished samples, config changes are refused or applied,
`mmat status` tells where a run stands, `--resume` continues with the run's own configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmat_core import Pipeline
from mmat_core.errors import ConfigError
from mmat_core.models import Rejected, SourceSample
from mmat_core.plugins import PluginManager
from mmat_core.store import RunStore
from tests.scale import plugin as stubs
from tests.scale.conftest import STUB_BUILD, run_mmat


def build(manager: PluginManager, out: Path, count: int = 24, **config: object) -> Pipeline:
    """A pipeline over the generated source with the stub tool and the counting backend."""
    from mmat_core.config import load_config

    overrides = {"source": {"name": "generated", "count": count, "reject_every": 7},
                 "llm": {"name": "counting_offline"}, "tools": ["ocr"], "critics": ["answer_match", "general"],
                 "formatters": ["rr", "orr"], "search": None, **config}
    return Pipeline.from_config(load_config(None, overrides), plugins=manager)


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_rerun_of_a_finished_run_makes_no_model_call_and_rewrites_identical_outputs(
        stub_manager: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("MMAT_TEST_CALL_LOG", str(log))
    out = tmp_path / "run"
    build(stub_manager, out).run(out)
    first = {name: (out / name).read_bytes() for name in ("rr.jsonl", "orr.jsonl", "quarantine.jsonl")}
    made = len(calls(log))
    result = build(stub_manager, out).run(out)
    assert len(calls(log)) == made
    assert result.manifest.counts["skipped_finished"] == result.manifest.counts["finished"] > 0
    assert {name: (out / name).read_bytes() for name in first} == first


def test_samples_lost_to_a_crash_are_rebuilt_from_the_cache(
        stub_manager: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("MMAT_TEST_CALL_LOG", str(log))
    out = tmp_path / "run"
    build(stub_manager, out).run(out)
    reference = (out / "rr.jsonl").read_bytes()
    made = len(calls(log))
    store = RunStore.open(out)
    store.connection().execute("DELETE FROM samples WHERE seq % 2 = 0")  # as if never committed
    store.close()
    result = build(stub_manager, out).run(out)
    assert len(calls(log)) == made  # every call of the lost samples came from the cache
    assert result.manifest.counts["generated"] > 0
    assert (out / "rr.jsonl").read_bytes() == reference


def test_finished_samples_keep_their_dedup_keys_for_the_next_resume(stub_manager: PluginManager, tmp_path: Path) -> None:
    out = tmp_path / "run"
    build(stub_manager, out).run(out)
    store = RunStore.open(out)
    try:
        keys = store.dedup_keys()
        assert keys is not None and len(keys) == store.count() == len(set(keys))
        store.connection().execute("UPDATE samples SET dedup=NULL WHERE seq=1")  # as an older mmat stored it
        assert store.dedup_keys() is None  # then a resume hashes the finished samples again
    finally:
        store.close()
    reference = (out / "rr.jsonl").read_bytes()
    build(stub_manager, out).run(out)
    assert (out / "rr.jsonl").read_bytes() == reference


def test_a_changed_configuration_is_refused_with_an_explanation(stub_manager: PluginManager, tmp_path: Path) -> None:
    out = tmp_path / "run"
    build(stub_manager, out).run(out)
    with pytest.raises(ConfigError) as error:
        build(stub_manager, out, engine={"max_turns": 5}).run(out)
    message = str(error.value)
    assert "engine.max_turns: 8 -> 5" in message
    assert "resume.on_config_change" in message and "new --out" in message


def test_execution_settings_are_not_a_configuration_change(stub_manager: PluginManager, tmp_path: Path) -> None:
    out = tmp_path / "run"
    build(stub_manager, out).run(out)
    result = build(stub_manager, out, engine={"concurrency": 3, "tool_workers": 1}).run(out)
    assert result.manifest.counts["config_changes_applied"] == 0


def test_an_applied_change_keeps_finished_samples_and_builds_the_rest_with_the_new_config(
        stub_manager: PluginManager, tmp_path: Path) -> None:
    out = tmp_path / "run"
    build(stub_manager, out, count=12).run(out)
    result = build(stub_manager, out, count=24, resume={"on_config_change": "apply"}).run(out)
    assert result.manifest.counts["config_changes_applied"] == 1
    assert result.manifest.counts["skipped_finished"] == 11  # 12 rows, one of them rejected
    fresh = tmp_path / "fresh"
    build(stub_manager, fresh, count=24).run(fresh)
    for name in ("rr.jsonl", "orr.jsonl", "quarantine.jsonl"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()


def test_applying_a_change_of_tools_to_a_started_run_is_refused(stub_manager: PluginManager, tmp_path: Path) -> None:
    out = tmp_path / "run"
    build(stub_manager, out, count=6).run(out)
    with pytest.raises(ConfigError, match=r"'apply' cannot change tools of a run with 6 finished samples"):
        build(stub_manager, out, count=6, tools=[], resume={"on_config_change": "apply"}).run(out)


def test_samples_the_new_stream_no_longer_selects_leave_the_outputs(stub_manager: PluginManager, tmp_path: Path) -> None:
    out = tmp_path / "run"
    build(stub_manager, out, count=24).run(out)
    result = build(stub_manager, out, count=12, resume={"on_config_change": "apply"}).run(out)
    assert result.manifest.counts["retired_by_config_change"] == 10
    fresh = tmp_path / "fresh"
    build(stub_manager, fresh, count=12).run(fresh)
    assert (out / "rr.jsonl").read_bytes() == (fresh / "rr.jsonl").read_bytes()


def test_status_reports_progress_failures_and_completeness(stub_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run_mmat("build", "--out", str(out), *STUB_BUILD, "--set", "source.count=30", "--set", "source.reject_every=5",
                    env=stub_env)
    assert done.returncode == 0, done.stderr
    status = run_mmat("status", str(out), "--json", env=stub_env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["complete"] is True
    assert info["finished"] == info["total"] == 24
    assert info["rejected"] == {"synthetic_bad_row": 6}
    text = run_mmat("status", str(out), env=stub_env).stdout
    assert "complete" in text and "synthetic_bad_row" in text and "24 of 24 samples finished" in text


class FailingSource(stubs.GeneratedSource):
    """The generated source, crashing after ``count`` rows (a disk or network failure mid-run)."""

    name = "crashing"

    def iter_rows(self) -> Iterator[SourceSample | Rejected]:
        yield from super().iter_rows()
        raise OSError("the dataset disk went away")


def test_status_of_an_interrupted_run_says_it_is_not_complete_and_how_to_resume(
        stub_manager: PluginManager, tmp_path: Path) -> None:
    from mmat_core import hookimpl
    from mmat_core.cli.status import run_status

    class Plugin:
        @staticmethod
        @hookimpl
        def register_sources(register: object) -> None:
            register(FailingSource)  # type: ignore[operator]

    stub_manager.register(Plugin, "crashing-source")
    out = tmp_path / "run"
    with pytest.raises(OSError):
        build(stub_manager, out, source={"name": "crashing", "count": 10}).run(out)
    info = run_status(out)
    assert info["complete"] is False and info["total"] is None
    assert info["finished"] == 10  # every sample read before the crash was finished and committed


def test_resume_flag_continues_with_the_configuration_the_run_started_with(stub_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_mmat("build", "--out", str(out), *STUB_BUILD, "--set", "source.count=10", env=stub_env)
    assert first.returncode == 0, first.stderr
    again = run_mmat("build", "--resume", str(out), env=stub_env)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["counts"]["skipped_finished"] == 10 and manifest["counts"]["model_calls"] == 0
    assert (manifest["config"]["source"]["name"], manifest["config"]["source"]["count"]) == ("generated", 10)


def test_resume_of_a_directory_that_is_no_run_says_so(stub_env: dict[str, str], tmp_path: Path) -> None:
    result = run_mmat("build", "--resume", str(tmp_path), env=stub_env)
    assert result.returncode == 2
    assert "no run store" in result.stderr and str(tmp_path) in result.stderr


def test_a_large_run_formats_in_worker_processes_and_gives_the_same_files(
        stub_manager: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from mmat_core import exporter

    one = tmp_path / "one"
    build(stub_manager, one, count=60).run(one)
    monkeypatch.setattr(exporter, "PARALLEL_MIN_TRACES", 1)  # what a run of 20,000 samples or more does
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # the stubs, for the workers
    several = tmp_path / "several"
    from mmat_core.run import phases

    parallel = phases.publish_in_processes
    used: list[int] = []

    def spy(formatters: list[Any], store: RunStore, out_dir: Path, ctx: Any, workers: int, tally: Any) -> dict[str, Path]:
        used.append(workers)
        return parallel(formatters, store, out_dir, ctx, workers, tally)

    monkeypatch.setattr(phases, "publish_in_processes", spy)
    result = build(stub_manager, several, count=60).run(several)
    assert used == [2]
    for name in ("rr.jsonl", "orr.jsonl", "quarantine.jsonl"):
        assert (several / name).read_bytes() == (one / name).read_bytes(), name
    first = json.loads((one / "run.json").read_text())
    second = result.manifest.model_dump(mode="json")
    assert second["yield_by_source"] == first["yield_by_source"]
    timing = {"latency_s"}  # each run's own
    assert {k: v for k, v in second["usage"].items() if k not in timing} == {k: v for k, v in first["usage"].items() if k not in timing}
    assert not list(several.glob(".export-parts-*"))


def test_a_build_whose_formatting_cannot_go_to_workers_formats_in_its_own_process(
        stub_manager: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from mmat_core import exporter
    from mmat_core.run import phases

    one = tmp_path / "one"
    build(stub_manager, one, count=30).run(one)
    monkeypatch.setattr(exporter, "PARALLEL_MIN_TRACES", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)

    def unpicklable(formatters: list[Any], store: RunStore, out_dir: Path, ctx: Any, workers: int, tally: Any) -> dict[str, Path]:
        tally.usage.add_data({"calls": 1000})  # partly counted before failing: must not stay counted
        raise TypeError("cannot pickle 'local' object")

    monkeypatch.setattr(phases, "publish_in_processes", unpicklable)
    again = tmp_path / "again"
    result = build(stub_manager, again, count=30).run(again)
    assert (again / "rr.jsonl").read_bytes() == (one / "rr.jsonl").read_bytes()
    assert result.manifest.usage.calls == json.loads((one / "run.json").read_text())["usage"]["calls"]
