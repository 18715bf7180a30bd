"""Silent loss and double spending: duplicate ids, two builds on one folder, a folder mmat did not
create, call accounting, zero yield, Ctrl-C, a full disk. Real files, real processes, real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mmat_core import Pipeline
from mmat_core.config import load_config
from tests.scale.conftest import read_jsonl

MMAT = [sys.executable, "-m", "mmat_core"]


def mmat(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, run to completion."""
    return subprocess.run([*MMAT, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (64, 48), "white").save(path)
    return path


def dataset(root: Path, rows: list[dict[str, Any]]) -> Path:
    """A JSONL dataset with one shared image; returns the data file."""
    root.mkdir(parents=True, exist_ok=True)
    png(root / "img.png")
    path = root / "rows.jsonl"
    path.write_text("".join(json.dumps({"image": "img.png", **row}) + "\n" for row in rows), encoding="utf-8")
    return path


def jsonl_build(data: Path, out: Path, *extra: str) -> list[str]:
    """`mmat build` arguments for a JSONL dataset, offline, no tools."""
    return ["build", "--source", "jsonl", "--source-path", str(data), "--tools", "", "--critics", "answer_match",
            "--formatters", "rr", "--set", "search=null", "--out", str(out), *extra]


DUPLICATED = [
    {"id": "a", "question": "What colour is the picture?", "answer": "white"},
    {"id": "a", "question": "Which shape is drawn?", "answer": "none"},
    {"id": "b", "question": "How wide is it?", "answer": "64"},
    {"id": "a", "question": "Is anything written?", "answer": "no"},
]


# -- duplicate ids -----------------------------------------------------------------------------


def test_a_repeated_sample_id_is_quarantined_before_any_model_call(tmp_path: Path) -> None:
    data = dataset(tmp_path / "data", DUPLICATED)
    config = load_config(None, {"llm_engine.progress": False})
    pipeline = Pipeline(source={"name": "jsonl", "path": str(data)}, llm="offline", tools=[], critics=["answer_match"],
                        formatters=["rr"], search=False, config=config)
    result = pipeline.run(tmp_path / "run")
    quarantine = read_jsonl(tmp_path / "run" / "quarantine.jsonl")
    assert [(q["reason"], q["row"]) for q in quarantine] == [("duplicate_id", "jsonl/a/0 (copy 2)"),
                                                                 ("duplicate_id", "jsonl/a/0 (copy 3)")]
    counts = result.manifest.counts
    assert (counts["read"], counts["generated"], counts["finished"], counts["rejected"]) == (2, 2, 2, 2)
    assert result.manifest.yield_by_source["jsonl"].reasons["duplicate_id"] == 2
    # The first row's sample is the one kept: the second never reached the model.
    rr = read_jsonl(tmp_path / "run" / "rr.jsonl")
    assert len(rr) == 2 and "What colour is the picture?" in json.dumps(rr[0])
    assert "Which shape is drawn?" not in json.dumps(rr) and "Is anything written?" not in json.dumps(rr)


def test_status_and_resume_agree_on_a_run_with_repeated_ids(tmp_path: Path) -> None:
    data = dataset(tmp_path / "data", DUPLICATED)
    out = tmp_path / "run"
    assert mmat(*jsonl_build(data, out)).returncode == 0
    status = json.loads(mmat("status", str(out), "--json").stdout)
    assert status["complete"] is True
    assert (status["finished"], status["total"], status["remaining"]) == (2, 2, 0)
    assert status["rejected"] == {"duplicate_id": 2}
    again = mmat("build", "--resume", str(out))
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert (manifest["counts"]["skipped_finished"], manifest["counts"]["model_calls"]) == (2, 0)
    assert [q["reason"] for q in read_jsonl(out / "quarantine.jsonl")] == ["duplicate_id", "duplicate_id"]
    assert len(read_jsonl(out / "rr.jsonl")) == 2
