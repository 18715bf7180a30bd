"""Bad input: every hostile row is quarantined with a clear reason and the good rows still come."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mmat_core.models import Rejected, SourceSample
from mmat_plugins.sources.generic import JsonlSource
from tests.sources import fixtures

# PIL warns before mmat refuses the bomb; the refusal is what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A dataset folder with one good row and one row per kind of bad input."""
    root = tmp_path / "data"
    images = root / "images"
    fixtures.save(fixtures.photo("astronaut"), images / "good.jpg")
    good = (images / "good.jpg").read_bytes()
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 4)
    (images / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (images / "empty.png").write_bytes(b"")
    # A decompression bomb: 10000x10000 pixels in a file of a few kilobytes.
    Image.new("1", (10_000, 10_000)).save(images / "bomb.png")
    outside = tmp_path / "secret.jpg"
    fixtures.save(fixtures.photo("coffee"), outside)
    os.symlink(outside, images / "link_out.jpg")
    rows: list[object] = [
        {"id": "good", "question": "Who is in the photo?", "answer": "an astronaut", "image": "images/good.jpg"},
        {"id": "missing", "question": "q?", "answer": "a", "image": "images/nope.jpg"},
        {"id": "corrupt", "question": "q?", "answer": "a", "image": "images/corrupt.jpg"},
        {"id": "truncated", "question": "q?", "answer": "a", "image": "images/truncated.jpg"},
        {"id": "empty", "question": "q?", "answer": "a", "image": "images/empty.png"},
        {"id": "bomb", "question": "q?", "answer": "a", "image": "images/bomb.png"},
        {"id": "no_question", "answer": "a", "image": "images/good.jpg"},
        {"id": "int_question", "question": 42, "answer": "a", "image": "images/good.jpg"},
        {"id": "dict_answer", "question": "q?", "answer": {"x": 1}, "image": "images/good.jpg"},
        {"id": "list_image", "question": "q?", "answer": "a", "image": [7]},
        {"id": "empty_question", "question": "   ", "answer": "a", "image": "images/good.jpg"},
        b'{"id": "bad_utf8", "question": "caf\xe9?", "answer": "a", "image": "images/good.jpg"}',
        b'{"id": "broken json", "question": ',
        {"id": "escape", "question": "q?", "answer": "a", "image": "../../etc/passwd"},
        {"id": "absolute", "question": "q?", "answer": "a", "image": "/etc/passwd"},
        {"id": "symlink", "question": "q?", "answer": "a", "image": "images/link_out.jpg"},
        [1, 2, 3],
        {"id": "last_good", "question": "What colour is the suit?", "answer": "white", "image": "images/good.jpg"},
    ]
    fixtures.write_jsonl(root / "rows.jsonl", rows)
    return root


def read(root: Path) -> dict[str, SourceSample | Rejected]:
    out: dict[str, SourceSample | Rejected] = {}
    for row in JsonlSource(path=str(root / "rows.jsonl")).iter_rows():
        out[row.id.split("/")[1] if isinstance(row, SourceSample) else row.row.split(":")[1]] = row
    return out


def reason(rows: dict[str, SourceSample | Rejected], line: int) -> str:
    row = rows[str(line)]
    assert isinstance(row, Rejected), row
    return row.reason


def test_good_rows_before_and_after_the_bad_ones_still_come_through(hostile: Path) -> None:
    good = [r.id for r in JsonlSource(path=str(hostile / "rows.jsonl")).iter_rows() if isinstance(r, SourceSample)]
    assert good == ["jsonl/good/0", "jsonl/last_good/0"]


@pytest.mark.parametrize(("line", "expected"), [
    (2, "image_missing"),
    (3, "image_corrupt"),
    (4, "image_corrupt"),
    (5, "image_empty"),
    (6, "image_too_large"),
    (7, "missing_field"),
    (8, "field_type"),
    (9, "field_type"),
    (10, "field_type"),
    (11, "empty_question"),
    (12, "invalid_utf8"),
    (13, "invalid_json"),
    (14, "path_escapes_root"),
    (15, "path_escapes_root"),
    (16, "path_escapes_root"),
    (17, "not_an_object"),
])
def test_each_bad_row_is_quarantined_with_its_reason(hostile: Path, line: int, expected: str) -> None:
    assert reason(read(hostile), line) == expected


def test_quarantine_entries_name_the_file_and_line_and_explain(hostile: Path) -> None:
    rows = read(hostile)
    bomb = rows["6"]
    assert isinstance(bomb, Rejected)
    assert bomb.row == "rows.jsonl:6"
    assert "10000x10000" in bomb.detail
    escape = rows["14"]
    assert isinstance(escape, Rejected)
    assert "resolves outside" in escape.detail


def test_a_run_quarantines_bad_rows_and_counts_them_per_source_and_reason(hostile: Path, tmp_path: Path) -> None:
    from mmat_core.pipeline import Pipeline

    pipeline = Pipeline(source={"name": "jsonl", "path": str(hostile / "rows.jsonl")}, llm="offline", tools=[],
                        critics=["answer_match"], formatters=["rr"], search=False)
    result = pipeline.run_local(tmp_path / "run")
    quarantine = [json.loads(line) for line in (tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantine) == 16
    counts = result.manifest.yield_by_source["jsonl"]
    assert counts.rejected == 16
    assert counts.reasons["path_escapes_root"] == 3
    assert counts.reasons["image_corrupt"] == 2
    assert counts.generated == 2
