"""The Ray executor's cluster properties at small N, on one local Ray shared by the module: a
worker killed mid-run loses and duplicates nothing and pays no finished call again; one limit
authority for every worker; one cache whatever the worker count; in-code plugins reach the
workers or stop the run with a clear message; ``mmat status`` shows each worker.

Paid calls are counted by the stub backend (``counting_offline`` writes one line per call it
really answers, from whichever process answers it)."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from mmat_core import Pipeline, hookimpl
from mmat_core.config import load_config
from mmat_core.errors import MmatError
from mmat_core.plugins import PluginManager, set_plugin_manager
from tests.scale import plugin as stubs

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("rr.jsonl", "orr.jsonl", "quarantine.jsonl")

pytestmark = pytest.mark.slow


class KillingOptions(stubs.StubToolOptions):
    """The stub OCR's options, plus a flag file: the first process to create it dies."""

    kill_flag: str | None = Field(None, description="create this file and kill -9 this process at the 3rd call")


class KillingStubTool(stubs.StubTool):
    """The stub OCR (same name and version, so the same cache keys and outputs) that kills its own
    process once, cluster-wide, at its third call in that process."""

    Options = KillingOptions
    calls_here = 0

    async def run(self, args: dict[str, Any], ctx: Any) -> Any:
        """Answer as the stub does, unless this call is the one that dies."""
        KillingStubTool.calls_here += 1
        flag = self.options.kill_flag
        if flag and KillingStubTool.calls_here == 3:
            try:
                fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, f"{os.getpid()} {ctx.sample.id}".encode())
                os.close(fd)
                time.sleep(0.3)  # noqa: ASYNC251 - blocking on purpose: this sample's first model call has reached the cache service
                os.kill(os.getpid(), signal.SIGKILL)
        return await super().run(args, ctx)


class ClusterStubs:
    """The scale stubs (generated source, counting backend) with the killing OCR, registered in code."""

    @hookimpl
    def register_sources(self, register: Callable[[type], None]) -> None:
        register(stubs.GeneratedSource)

    @hookimpl
    def register_llms(self, register: Callable[[type], None]) -> None:
        register(stubs.CountingOfflineBackend)

    @hookimpl
    def register_tools(self, register: Callable[[type], None]) -> None:
        register(KillingStubTool)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray for this module: 2 CPUs, a 100 MB object store; workers import tests/ from the repo."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:3]])}})
    yield
    ray.shutdown()


def build(out: Path, calls: Path, executor: str | dict, *, count: int = 12, kill_flag: Path | None = None,
          llm_engine: dict | None = None, progress: Callable[[dict], None] | None = None) -> Any:
    manager = PluginManager(block=["tools", "sources"])
    manager.register(ClusterStubs(), "ray-cluster-stubs")
    set_plugin_manager(manager)
    config = load_config(None, {
        "source": {"name": "generated", "count": count, "reject_every": 5},
        "llm": {"name": "counting_offline", "log": str(calls)},
        "llm_engine": {"progress": False, **(llm_engine or {})},
        "tools": [{"name": "ocr", **({"kill_flag": str(kill_flag)} if kill_flag else {})}],
        "critics": ["answer_match", "general"], "formatters": ["rr", "orr"], "search": None,
        "executor": executor,
    })
    return Pipeline.from_config(config, plugins=manager).run(out, progress=progress)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build every Ray build below must match, by the local executor."""
    out = tmp_path_factory.mktemp("local")
    build(out / "run", out / "calls", "local")
    return out / "run"


@pytest.fixture(scope="module")
def served_run(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any, str]:
    """One Ray build with two workers, a cluster-wide concurrency of 2 and an rpm limit, the OCR
    as a shared service and mmat build's progress display: (run directory, call log, result,
    what the display printed)."""
    from mmat_core.engine.progress import LiveProgress

    out = tmp_path_factory.mktemp("served")
    executor = ray_executor(workers=2, samples_per_worker=3,
                            tool_services={"ocr": {"replicas": 1, "max_batch": 8, "max_wait_ms": 20}})
    printed = io.StringIO()
    display = LiveProgress(stream=printed, plain_every_s=0.0, live=False)
    result = build(out / "run", out / "calls", executor, llm_engine={"concurrency": 2, "rpm": 6000}, progress=display)
    display.close()
    return out / "run", out / "calls", result, printed.getvalue()


def paid(calls: Path) -> Counter[str]:
    """How many times each call (by cache key) was really answered."""
    lines = calls.read_text().splitlines() if calls.exists() else []
    return Counter(line.split("\t")[2] for line in lines)


def ray_executor(workers: int = 2, **extra: Any) -> dict[str, Any]:
    return {"name": "ray", "workers": workers, "samples_per_worker": 1, "batch_size": 1, **extra}


@pytest.fixture(scope="module")
def killed_run(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A Ray build in which one worker dies mid-sample: (its folder, the result)."""
    tmp_path = tmp_path_factory.mktemp("killed")
    result = build(tmp_path / "ray", tmp_path / "ray.calls", ray_executor(), kill_flag=tmp_path / "killed")
    return tmp_path, result


def test_a_worker_killed_mid_run_loses_duplicates_and_repays_nothing(killed_run: tuple[Path, Any],
                                                                     local_reference: Path) -> None:
    tmp_path, result = killed_run
    assert (tmp_path / "killed").exists()  # a worker really died mid-sample
    assert result.manifest.counts["workers_lost"] == 1
    assert result.manifest.counts["samples_requeued"] >= 1
    assert len(json.loads((tmp_path / "ray" / "engine.json").read_text())["lost_workers"]) == 1
    for name in OUTPUTS:
        assert (tmp_path / "ray" / name).read_bytes() == (local_reference / name).read_bytes(), name
    ids = [json.loads(line)["id"] for line in (tmp_path / "ray" / "rr.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == result.manifest.counts["finished"]
    calls = paid(tmp_path / "ray.calls")
    assert max(calls.values()) == 1  # the killed sample's finished call came from the cache
    assert set(calls) == set(paid(local_reference.parent / "calls"))


def test_run_json_counts_the_calls_a_lost_worker_reported_before_it_died(killed_run: tuple[Path, Any]) -> None:
    tmp_path, result = killed_run
    engine = json.loads((tmp_path / "ray" / "engine.json").read_text())
    finished = sum(w["calls_made"] for w in engine["workers"].values())
    lost = sum(c["calls_made"] for c in engine["lost_worker_counters"].values())
    counts = result.manifest.counts
    assert lost > 0  # it died at its third tool call, after its first batches came back
    assert counts["model_calls"] == finished + lost
    assert counts.get("model_calls_of_lost_workers", 0) == lost
    # Only what the lost worker made for the batch it died holding is missing from run.json.
    assert counts["model_calls"] <= sum(paid(tmp_path / "ray.calls").values())


def test_a_resume_with_any_worker_count_reuses_every_finished_sample_and_paid_call(local_ray: None,
                                                                                  tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    build(tmp_path / "run", calls, ray_executor(workers=2))
    paid_once = sum(paid(calls).values())
    again = build(tmp_path / "run", calls, ray_executor(workers=1))
    assert again.manifest.counts["skipped_finished"] == again.manifest.counts["finished"] > 0
    # The store is lost (as if every sample were unfinished); the cache stays.
    for name in ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm", "run.json"):
        (tmp_path / "run" / name).unlink(missing_ok=True)
    rebuilt = build(tmp_path / "run", calls, ray_executor(workers=3))
    assert rebuilt.manifest.counts["generated"] == rebuilt.manifest.counts["finished"] > 0
    assert rebuilt.manifest.counts["model_calls"] == 0
    assert sum(paid(calls).values()) == paid_once


def test_every_worker_takes_its_slots_from_one_limit_authority(served_run: tuple[Path, Path, Any, str]) -> None:
    run_dir, calls, result, _ = served_run
    engine = json.loads((run_dir / "engine.json").read_text())
    (limits,) = engine["shared_limits"].values()
    assert limits["concurrency"] == 2 and limits["rpm"] == 6000
    assert limits["admitted"] == sum(paid(calls).values()) == result.manifest.counts["model_calls"]
    assert limits["peak_in_flight"] <= 2
    assert len(engine["workers"]) == 2


def test_a_tool_service_runs_every_workers_calls_in_batches(served_run: tuple[Path, Path, Any, str],
                                                            local_reference: Path) -> None:
    run_dir, _, _, _ = served_run
    for name in OUTPUTS:
        assert (run_dir / name).read_bytes() == (local_reference / name).read_bytes(), name
    engine = json.loads((run_dir / "engine.json").read_text())
    (replica,) = engine["tool_services"]["ocr"]
    ocr_calls = sum(json.loads((run_dir / "workers.json").read_text())["workers"][i]["tool_calls"].get("ocr", 0)
                    for i in range(2))
    assert replica["calls"] == ocr_calls > 0
    assert sum(int(size) * n for size, n in replica["batch_sizes"].items()) == replica["calls"]
    assert 0 < replica["utilisation"] <= 1


def test_the_progress_display_follows_a_ray_build(served_run: tuple[Path, Path, Any, str]) -> None:
    _, _, result, printed = served_run
    last = printed.strip().splitlines()[-1]
    assert f"samples {result.manifest.counts['finished']}: kept" in last
    assert f"calls {result.manifest.counts['model_calls']}" in last


def test_a_plugin_registered_in_code_that_workers_cannot_import_stops_the_run_with_a_hint(
        local_ray: None, tmp_path: Path) -> None:
    ghost = types.ModuleType("mmat_ghost_plugin")  # exists in this process only
    exec("from mmat_core import hookimpl\n@hookimpl\ndef register_critics(register):\n    pass\n",  # noqa: S102
         ghost.__dict__)
    sys.modules["mmat_ghost_plugin"] = ghost
    try:
        manager = PluginManager(block=["tools", "sources"])
        manager.register(ClusterStubs(), "ray-cluster-stubs")
        manager.register(ghost, "ghost")
        config = load_config(None, {
            "source": {"name": "generated", "count": 2}, "llm": {"name": "counting_offline"},
            "llm_engine": {"progress": False}, "tools": ["ocr"], "critics": [], "formatters": ["rr"],
            "search": None, "executor": ray_executor(workers=1)})
        with pytest.raises(MmatError, match=r"plugin 'ghost' was registered in code .*install it as a distribution"):
            Pipeline.from_config(config, plugins=manager).run(tmp_path / "run")
    finally:
        del sys.modules["mmat_ghost_plugin"]


def test_mmat_status_shows_each_ray_worker(served_run: tuple[Path, Path, Any, str]) -> None:
    from mmat_core.cli.status import run_status

    info = run_status(served_run[0])
    workers = info["workers"]["workers"]
    assert [w["worker"] for w in workers] == ["w0", "w1"]
    assert all(w["state"] == "done" for w in workers)
    assert sum(w["samples_done"] for w in workers) == info["finished"]


#: Built-in components only, loaded from entry points on the workers as on a real cluster.
BUILTIN = {"tools": ["image_caption"], "critics": ["answer_match", "general", "math"], "formatters": ["rr", "orr", "hf_dataset"]}


@pytest.fixture(scope="module")
def builtin_runs(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """The bundled sample built with built-in components by the local executor and by Ray."""
    out = tmp_path_factory.mktemp("builtin")
    results = []
    for name, executor in (("local", "local"), ("ray", {"name": "ray", "workers": 2})):
        manager = PluginManager()
        set_plugin_manager(manager)
        pipeline = Pipeline.from_config(load_config(None, {**BUILTIN, "executor": executor}), plugins=manager)
        results.append(pipeline.run(out / name))
    return out / "local", out / "ray", results[1]


def test_ray_build_of_builtin_components_writes_the_same_files_as_local(builtin_runs: tuple[Path, Path, Any]) -> None:
    local, ray_dir, result = builtin_runs
    for name in OUTPUTS:
        assert (ray_dir / name).read_bytes() == (local / name).read_bytes(), name
    assert result.manifest.counts["workers"] == 2
    assert result.manifest.components["executor"]["name"] == "ray"
    local_manifest = json.loads((local / "run.json").read_text())
    assert result.manifest.counts["model_calls"] == local_manifest["counts"]["model_calls"]


def test_ray_build_and_export_write_the_same_dataset_card(builtin_runs: tuple[Path, Path, Any], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mmat_core.cli import main

    _, ray_dir, _ = builtin_runs
    result = CliRunner().invoke(main, ["export", str(ray_dir), "-f", "hf_dataset", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "hf_dataset_rr" / "README.md").read_bytes() == (ray_dir / "hf_dataset_rr" / "README.md").read_bytes()


def test_reused_workers_build_the_next_run_in_the_same_actors_with_the_same_files(local_ray: None,
                                                                               local_reference: Path,
                                                                               tmp_path: Path) -> None:
    from mmat_plugins.executors.ray_executor import stop_kept_actors

    pids = []
    try:
        for name in ("first", "second"):
            build(tmp_path / name, tmp_path / f"{name}.calls", ray_executor(reuse_workers=True))
            state = json.loads((tmp_path / name / "workers.json").read_text())
            pids.append({w["pid"] for w in state["workers"]})
            for output in OUTPUTS:
                assert (tmp_path / name / output).read_bytes() == (local_reference / output).read_bytes(), output
    finally:
        assert stop_kept_actors() == 4  # two workers, the limit authority and the cache service
    assert pids[0] == pids[1] and len(pids[0]) == 2
