"""A build with no sample to build fails with one line saying so (issue 15): an empty source file
exited 0 with "0 kept", and a file of nothing but bad rows failed with "kept 0 of 0 finished"
naming neither the source nor the fact that no row got through. ``--min-yield 0`` accepts both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def build(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`mmat build` of a jsonl source, offline, in a subprocess (the CLI a user runs)."""
    args = ["build", "--set", "source.name=jsonl", "--set", f"source.path={data}", "--tools", "", "--set", "search=null",
            "--set", "llm_engine.progress=false", "--out", str(out), *extra]
    return subprocess.run([sys.executable, "-m", "mmat_core", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def test_an_empty_source_file_fails_naming_the_source(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_bytes(b"")
    result = build(data, tmp_path / "run")
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = error_lines(result)
    assert "no sample to build" in line and f"jsonl ({data})" in line and "yielded no row at all" in line
    assert "--min-yield 0" in line
    assert "Traceback" not in result.stderr


def test_a_source_whose_rows_are_all_bad_fails_with_the_top_reasons(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('not json\n{"id": "x"}\n{"id": "y", "question": "Q?", "answer": "a", "image": "missing.png"}\n',
                    encoding="utf-8")
    result = build(data, tmp_path / "run")
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = error_lines(result)
    assert "no sample to build" in line and f"jsonl ({data})" in line and "3 quarantined" in line
    assert "invalid_json 1" in line


def test_min_yield_zero_accepts_an_empty_source(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_bytes(b"")
    result = build(data, tmp_path / "run", "--min-yield", "0")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "run.json").is_file()
