"""The run folder guard under misuse (a reviewer's attacks): ``--force`` into a folder of the
user's own files says which files may be replaced, and ``--out`` naming a dangling symbolic
link is a one-line error that says so. Real command lines, real folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmat_core.errors import OutputDirError
from mmat_core.rundir import check_run_dir
from tests.scale.test_run_integrity import dataset, jsonl_build


def test_force_into_a_folder_of_the_users_files_warns_naming_them(tmp_path: Path) -> None:
    data = dataset(tmp_path / "data", [{"id": "a", "question": "What colour is it?", "answer": "white"}])
    home = tmp_path / "home"
    home.mkdir()
    (home / "rr.jsonl").write_text('{"mine": "precious"}\n')
    result = subprocess.run([sys.executable, "-m", "mmat_core", *jsonl_build(data, home, "--force")],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("--force:")]
    assert str(home) in warning and "rr.jsonl" in warning and "replaced" in warning


def test_a_run_folder_needs_no_force_and_gets_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".mmat.lock").write_text("")
    (run / "rr.jsonl").write_text("{}\n")
    check_run_dir(run, force=True)
    assert caplog.records == []


def test_out_naming_a_dangling_symlink_is_an_error_naming_its_target(tmp_path: Path) -> None:
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(OutputDirError, match="symbolic link to .*gone, which does not exist"):
        check_run_dir(link)
