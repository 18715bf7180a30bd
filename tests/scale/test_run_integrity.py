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
from tests.scale.conftest import STUB_BUILD, mmat_command, read_jsonl, run_mmat
from tests.signals import default_sigint

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


# -- two builds on one folder ------------------------------------------------------------------

#: A stub build slow enough (a call takes 50 ms, two at a time) to be met while it runs.
SLOW_BUILD = [*STUB_BUILD, "--set", "source.count=60", "--set", "llm.delay_s=0.05", "--set", "engine.concurrency=2"]


def start_build(out: Path, env: dict[str, str], *args: str, calls: int = 1) -> subprocess.Popen[str]:
    """A `mmat build` running in the background, once it holds the folder's lock and made ``calls`` calls."""
    log = out.parent / f"{out.name}.calls"
    process = subprocess.Popen(mmat_command("build", *args), env={**env, "MMAT_TEST_CALL_LOG": str(log)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= calls:
            return process
        time.sleep(0.02)
    raise AssertionError(f"the build never started: {process.communicate()[1][-2000:]}")


def test_a_second_build_into_a_running_build_folder_is_refused_naming_the_holder(stub_env: dict[str, str],
                                                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = start_build(out, stub_env, "--out", str(out), *SLOW_BUILD)
    try:
        second = run_mmat("build", "--out", str(out), *SLOW_BUILD, env={**stub_env, "MMAT_TEST_CALL_LOG": str(tmp_path / "2nd")})
        assert first.poll() is None  # still running: the refusal did not wait for it
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 2
    assert f"pid {first.pid}" in second.stderr and "in use by another mmat process" in second.stderr
    assert "Traceback" not in second.stderr
    assert not (tmp_path / "2nd").exists()  # not one model call


def test_a_build_killed_with_sigkill_leaves_no_stale_lock(stub_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = start_build(out, stub_env, "--out", str(out), *SLOW_BUILD)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    again = run_mmat("build", "--resume", str(out), env=stub_env)
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(out / "rr.jsonl")) == json.loads((out / "run.json").read_text())["counts"]["kept"] > 0


def test_export_into_a_run_being_built_is_refused_but_status_reads_it(stub_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = start_build(out, stub_env, "--out", str(out), *SLOW_BUILD)
    try:
        export = run_mmat("export", str(out), "--format", "rr", env=stub_env)
        status = run_mmat("status", str(out), "--json", env=stub_env)
    finally:
        first.kill()
        first.communicate()
    assert export.returncode == 2 and f"pid {first.pid}" in export.stderr
    assert status.returncode == 3 and json.loads(status.stdout)["complete"] is False


# -- a folder mmat did not create --------------------------------------------------------------


def test_a_build_into_a_folder_of_someone_elses_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "rr.jsonl").write_text("my own data\n")
    (out / "notes.txt").write_text("keep me\n")
    refused = mmat("build", "--out", str(out), "--limit", "1")
    assert refused.returncode == 2
    assert str(out) in refused.stderr and "notes.txt, rr.jsonl" in refused.stderr and "--force" in refused.stderr
    assert (out / "rr.jsonl").read_text() == "my own data\n"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "rr.jsonl"]


def test_force_writes_into_a_foreign_folder_and_a_run_folder_is_reused_without_it(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    assert mmat("build", "--out", str(out), "--limit", "1", "--force").returncode == 0
    assert (out / "notes.txt").read_text() == "keep me\n"
    again = mmat("build", "--out", str(out), "--limit", "1")
    assert again.returncode == 0, again.stderr


def test_out_naming_an_existing_file_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("a file")
    config = tmp_path / "mmat.yaml"
    config.write_text(f"out: {target}\n")
    result = mmat("build", "-c", str(config), "--limit", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"Error: {target} is a file, not a folder: give `out` (or --out) "
                                                  "a folder path, new or empty"]


# -- what a person sees ------------------------------------------------------------------------


def test_the_live_line_shows_kept_dropped_and_quarantined() -> None:
    import io

    from mmat_core.engine.progress import LiveProgress

    stream = io.StringIO()
    display = LiveProgress(stream=stream, live=False, plain_every_s=3600)
    display({"event": "started", "snapshot": lambda: {"calls_made": 12, "reasks": 4}})
    for done, status in enumerate(["kept", "dropped", "failed", "reflected"], 1):
        display({"done": done, "status": status, "rejected": 2})
    line = display.line()
    assert "samples 4: kept 2, dropped 2, quarantined 2" in line and "calls 12 (4 re-asks)" in line


def test_ctrl_c_prints_how_to_resume_and_the_run_resumes(stub_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    build = start_build(out, stub_env, "--out", str(out), *SLOW_BUILD, calls=30)  # some samples finished
    build.send_signal(signal.SIGINT)
    _, stderr = build.communicate(timeout=120)
    assert build.returncode == 130
    assert f"Resume with: mmat build --resume {out}" in stderr and "Traceback" not in stderr
    again = run_mmat("build", "--resume", str(out), env=stub_env)
    assert again.returncode == 0, again.stderr
    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts["skipped_finished"] > 0 and counts["finished"] == len(read_jsonl(out / "rr.jsonl")) + counts.get(
        "status_dropped", 0) + counts.get("status_failed", 0)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A real 300 KB filesystem (tmpfs), and a way to grow it; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=16m", str(mount)], check=True)

    try:
        yield mount, grow
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_error_line_saying_what_to_do_and_the_rerun_resumes(small_disk: Any) -> None:
    mount, grow = small_disk
    out = mount / "run"
    full = mmat("build", "--out", str(out))
    assert full.returncode == 2
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the disk is full (")
    assert str(out) in lines[0] and "MB free" in lines[0] and f"mmat build --resume {out}" in lines[0]
    grow()
    again = mmat("build", "--resume", str(out))
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["counts"]["kept"] == len(read_jsonl(out / "rr.jsonl")) > 0
