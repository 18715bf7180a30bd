"""`mmat export --check` when the consumer's Python is not what the user thinks: a missing path,
a file that is no program, a program that is not Python, one that prints garbage, one that hangs
(with a child holding its output open)."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

from mmat_core.exporter import ConsumerCheck, ExportResult, check_exports, export_run


def _export(run_dir: Path, tmp_path: Path) -> ExportResult:
    return export_run(run_dir, ["openai_chat"], tmp_path / "out")


def _program(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _only(reports: list[ConsumerCheck]) -> ConsumerCheck:
    assert len(reports) == 1
    return reports[0]


def test_check_with_a_program_that_prints_nothing_and_exits_0_is_not_ok(run_dir: Path, tmp_path: Path) -> None:
    report = _only(check_exports(_export(run_dir, tmp_path), {"": "/bin/true"}))
    assert report.status == "failed" and "gave no report" in report.detail and "/bin/true" in report.detail


def test_check_with_a_file_that_is_no_program_fails_naming_it(run_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "python"
    text.write_text("not a program")
    report = _only(check_exports(_export(run_dir, tmp_path), {"": str(text)}))
    assert report.status == "failed" and "could not run" in report.detail and str(text) in report.detail


def test_check_with_a_program_printing_broken_json_fails_without_a_crash(run_dir: Path, tmp_path: Path) -> None:
    python = _program(tmp_path / "python", "#!/bin/sh\necho '{not json'\nexit 0\n")
    report = _only(check_exports(_export(run_dir, tmp_path), {"": python}))
    assert report.status == "failed" and "gave no report" in report.detail


def test_check_that_hangs_is_stopped_at_the_timeout_with_its_children(run_dir: Path, tmp_path: Path) -> None:
    # The child sleeps with the check's stdout open: stopping only the parent would leave the
    # export waiting for that pipe to close.
    python = _program(tmp_path / "python", f"#!/bin/sh\nsleep 300 &\necho $! > {tmp_path}/child.pid\nsleep 300\n")
    report = _only(check_exports(_export(run_dir, tmp_path), {"": python}, timeout=1))
    assert report.status == "failed" and "stopped after 1 s" in report.detail and "--check-timeout" in report.detail
    child = Path(f"/proc/{(tmp_path / 'child.pid').read_text().strip()}/stat")
    # SIGKILL is delivered when the child is next scheduled: on a loaded machine it may still show
    # as running for a moment, so wait (bounded) for it to be gone or a zombie not yet reaped.
    deadline = time.monotonic() + 10
    while child.exists() and _state(child) != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not child.exists() or _state(child) == "Z"


def _state(stat: Path) -> str:
    """The one-letter process state in a /proc/PID/stat file ('' once the process is gone)."""
    try:
        return stat.read_text().split(")")[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return ""


def test_export_check_python_that_does_not_exist_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mmat_core", "export", str(run_dir), "-f", "openai_chat", "--out",
                           str(tmp_path / "o"), "--check", "--check-python", "/no/such/python"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "/no/such/python" in done.stderr and "Traceback" not in done.stderr
