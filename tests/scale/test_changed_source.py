"""A source that changed between runs (rows added, bad rows fixed): a rerun of the same run
directory gives the files a fresh run of the new source gives, and loses nothing on the way."""

from __future__ import annotations

import json
from pathlib import Path

from mmat_core import Pipeline
from mmat_core.config import load_config
from tests.core.conftest import make_png


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def build(data: Path, out: Path) -> Pipeline:
    config = load_config(None, {"source": {"name": "jsonl", "path": str(data)}, "tools": [], "critics": ["answer_match"],
                                "formatters": ["rr", "orr"]})
    return Pipeline.from_config(config)


def row(i: int, **extra: object) -> dict:
    return {"id": f"r{i}", "question": f"What is written in picture {i}?", "answer": "TOTAL", "image": "a.png", **extra}


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("rr.jsonl", "orr.jsonl", "quarantine.jsonl")}


def test_rows_added_before_finished_ones_are_built_and_nothing_is_overwritten(tmp_path: Path) -> None:
    make_png(tmp_path / "a.png")
    data, out = tmp_path / "rows.jsonl", tmp_path / "run"
    write_rows(data, [row(1), row(2), row(3)])
    build(data, out).run(out)
    write_rows(data, [row(0), row(1), row(2), row(3)])  # a new first row shifts every place
    result = build(data, out).run(out)
    assert result.manifest.counts["skipped_finished"] == 3 and result.manifest.counts["generated"] == 1
    fresh = tmp_path / "fresh"
    build(data, fresh).run(fresh)
    assert outputs(out) == outputs(fresh)


def test_rows_fixed_since_the_last_run_leave_the_quarantine(tmp_path: Path) -> None:
    make_png(tmp_path / "a.png")
    data, out = tmp_path / "rows.jsonl", tmp_path / "run"
    write_rows(data, [row(1), {"id": "r2", "question": "", "answer": "x", "image": "a.png"}])
    build(data, out).run(out)
    assert (out / "quarantine.jsonl").read_text().count("\n") == 1
    write_rows(data, [row(1), row(2)])
    result = build(data, out).run(out)
    assert (out / "quarantine.jsonl").read_text() == ""
    assert result.manifest.counts["kept"] == 2
