"""Task files for one lmms-eval run: the paper's tasks on local data, and mmat's Dyn-VQA task.

lmms-eval resolves a task name to a YAML file. Its own tasks name a Hub dataset; to read a local
copy instead, mmat writes a small task file per benchmark into the run folder that *includes*
lmms-eval's own YAML by absolute path (so its prompts, ``!function`` hooks, filters and metrics
are the ones that run) and overrides only where the data comes from: ``dataset_path`` (the local
folder) and ``dataset_kwargs`` (no Hub token). Those tasks are named ``mmat_local_<task>``:
lmms-eval gives its built-in task names precedence over ``--include_path``, so a file cannot
shadow them. Without a data root the built-in task names are used as they are (Hub downloads).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from mmat_plugins.evaluation.lmms.suite import BenchmarkSpec

from mmat_core import ConfigError

#: The YAML file of each paper task inside lmms-eval's ``tasks`` folder.
TASK_FILES: dict[str, str] = {
    "mmstar": "mmstar/mmstar.yaml",
    "mmmu_val": "mmmu/mmmu_val.yaml",
    "mathvista_testmini_format": "mathvista/mathvista_testmini_format.yaml",
    "mathvision_testmini": "mathvision/mathvision_testmini.yaml",
    "ai2d": "ai2d/ai2d.yaml",
    "ocrbench": "ocrbench/ocrbench.yaml",
    "realworldqa": "realworldqa/realworldqa.yaml",
    "hallusion_bench_image": "hallusion_bench/hallusion_bench_image.yaml",
}

LOCAL_PREFIX = "mmat_local_"


def lmms_tasks_dir(python: str) -> Path:
    """lmms-eval's ``tasks`` folder in the environment of ``python`` (found without importing lmms-eval)."""
    probe = "import importlib.util as u; s = u.find_spec('lmms_eval'); print(list(s.submodule_search_locations)[0] if s else '')"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise ConfigError(f"cannot run the lmms-eval python {python!r}: {exc}") from exc
    location = done.stdout.strip()
    if done.returncode != 0 or not location:
        raise ConfigError(f"lmms-eval is not installed for {python} (pip install 'mmat[eval]', or point "
                          "--lmms-python / MMAT_LMMS_PYTHON at the python of an environment that has it)")
    return Path(location) / "tasks"


def dynvqa_task_dir() -> Path:
    """The folder of mmat's Dyn-VQA task files (package data)."""
    return Path(str(resources.files("mmat_plugins.evaluation.lmms") / "lmms_tasks" / "dynvqa"))


def _yaml(data: dict[str, object]) -> str:
    # JSON is valid YAML, and json.dumps quotes every path safely.
    return json.dumps(data, indent=2) + "\n"


def write_local_tasks(folder: Path, tasks_dir: Path, benchmarks: Sequence[BenchmarkSpec], data_root: Path) -> dict[str, str]:
    """Write one task file per benchmark reading ``data_root/<repo_id>``; returns benchmark key -> task name."""
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for spec in benchmarks:
        source = tasks_dir / TASK_FILES[spec.task]
        if not source.is_file():
            raise ConfigError(f"lmms-eval has no task file {source} (task {spec.task!r}); is it lmms-eval 0.7.x?")
        local = data_root / spec.repo_id
        if not (local / "README.md").is_file() and not any(local.glob("**/*.parquet")):
            raise ConfigError(f"no local copy of {spec.title} at {local}: expected the Hub layout of {spec.repo_id} "
                              "(README.md and data/*.parquet); write fixtures with "
                              "`python -m mmat_plugins.evaluation.lmms.fixtures ROOT` or snapshot the dataset there")
        name = LOCAL_PREFIX + spec.task
        (folder / f"{name}.yaml").write_text(_yaml({
            "include": str(source), "task": name, "tag": ["mmat_local"],
            "dataset_path": str(local.resolve()), "dataset_kwargs": {},
        }), encoding="utf-8")
        names[spec.key] = name
    return names


def write_dynvqa_task(folder: Path, prepared: Path, golden: bool) -> str:
    """Write the Dyn-VQA task file reading ``prepared`` (see :mod:`.dynvqa`); returns its task name."""
    folder.mkdir(parents=True, exist_ok=True)
    base = "dynvqa_golden.yaml" if golden else "dynvqa.yaml"
    name = "mmat_dynvqa_golden" if golden else "mmat_dynvqa"
    (folder / f"{name}.yaml").write_text(_yaml({
        "include": str(dynvqa_task_dir() / base), "task": name,
        "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(prepared.resolve())}},
    }), encoding="utf-8")
    return name
