"""The Ray executor: sharded over workers of a local Ray (2 CPUs, bounded object store), merged
deterministically into the same files the local executor writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmat_core import Pipeline
from mmat_core.config import load_config
from mmat_core.plugins import PluginManager, set_plugin_manager

OUTPUTS = ("rr.jsonl", "orr.jsonl", "quarantine.jsonl")
#: Built-in components only: Ray workers load plugins from entry points, like a real cluster.
CONFIG = {"tools": ["image_caption"], "critics": ["answer_match", "general", "math"], "formatters": ["rr", "orr"]}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray for this module: 2 CPUs, no dashboard, a 100 MB object store."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False)
    yield
    ray.shutdown()


def pipeline(executor: str | dict, **extra: object) -> Pipeline:
    manager = PluginManager()
    set_plugin_manager(manager)
    return Pipeline.from_config(load_config(None, {**CONFIG, "executor": executor, **extra}), plugins=manager)


@pytest.mark.slow
def test_ray_build_writes_the_same_files_as_the_local_executor(local_ray: None, tmp_path: Path) -> None:
    local = pipeline("local").run(tmp_path / "local")
    sharded = pipeline({"name": "ray", "workers": 2}).run(tmp_path / "ray")
    for name in OUTPUTS:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert sharded.manifest.counts["workers"] == 2
    assert sharded.manifest.counts["finished"] == local.manifest.counts["finished"]
    assert sharded.manifest.counts["model_calls"] == local.manifest.counts["model_calls"]
    assert sharded.manifest.components["executor"]["name"] == "ray"
    # The workers' engine totals are summed into the same per-stage figures.
    assert ({k: u.calls for k, u in sharded.manifest.usage_by_stage.items()}
            == {k: u.calls for k, u in local.manifest.usage_by_stage.items()})
    # One cache for the run, where the local executor keeps it; no worker folders.
    assert (tmp_path / "ray" / "cache.sqlite").exists()
    assert not (tmp_path / "ray" / "shards").exists()


@pytest.mark.slow
def test_ray_rerun_resumes_from_the_merged_store(local_ray: None, tmp_path: Path) -> None:
    pipeline({"name": "ray", "workers": 2}).run(tmp_path / "run")
    again = pipeline({"name": "ray", "workers": 2}).run(tmp_path / "run")
    assert again.manifest.counts["model_calls"] == 0
    assert again.manifest.counts["skipped_finished"] == again.manifest.counts["finished"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["complete"] is True


@pytest.mark.slow
def test_ray_build_and_export_write_the_same_dataset_card(local_ray: None, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mmat_core.cli import main

    pipeline({"name": "ray", "workers": 2}, formatters=["rr", "hf_dataset"]).run(tmp_path / "run")
    built = (tmp_path / "run" / "hf_dataset_rr" / "README.md").read_bytes()
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "-f", "hf_dataset", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "hf_dataset_rr" / "README.md").read_bytes() == built
