"""A JSON ``\\uD800``-style escape names a lone surrogate: valid JSON grammar, but no character
UTF-8 can hold, so SQLite (the run store, the cache) cannot store it. Such a row is quarantined
by the reader as ``invalid_utf8`` (like a line of raw bytes that are not UTF-8), in ``.jsonl``
and ``.json``; a proper pair (an emoji written as two escapes) is kept. Before, a lone
surrogate in an id, a question or an answer crashed the build, and every resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mmat_plugins.sources.readers import iter_json_items, iter_jsonl
from PIL import Image

from mmat_core.errors import RowError

# json.dumps writes a lone surrogate as the escape \udXXX (ensure_ascii), as a hostile file would.
ROWS = [
    {"id": "good", "question": "What colour is it?", "answer": "white", "image": "img.png"},
    {"id": "lone-id-\udcff", "question": "What colour is it?", "answer": "white", "image": "img.png"},
    {"id": "lone-question", "question": "What\ud800 colour?", "answer": "white", "image": "img.png"},
    {"id": "lone-answer", "question": "What colour is it?", "answer": "wh\udfffite", "image": "img.png"},
    {"id": "lone-image", "question": "What colour is it?", "answer": "white", "image": "im\udcffg.png"},
    {"id": "lone-key", "question": "What colour is it?", "answer": "white", "image": "img.png", "x\ud800": 1},
    {"id": "pair", "question": "Which emoji? \U0001F600", "answer": "a smile", "image": "img.png"},
    {"id": "escaped-backslash", "question": "Is \\ud800 text?", "answer": "yes", "image": "img.png"},
]
LONE = ["lone-id", "lone-question", "lone-answer", "lone-image", "lone-key"]


def write_dataset(root: Path, suffix: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), "white").save(root / "img.png")
    path = root / f"rows{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="ascii")
    else:
        path.write_text(json.dumps(ROWS, indent=1), encoding="ascii")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_row_with_a_lone_surrogate_escape_is_read_as_invalid_utf8(tmp_path: Path, suffix: str) -> None:
    path = write_dataset(tmp_path, suffix)
    read = iter_jsonl(path) if suffix == ".jsonl" else iter_json_items(path)
    values = [value for _, value in read]
    assert [v.reason for v in values if isinstance(v, RowError)] == ["invalid_utf8"] * len(LONE)
    assert [v["id"] for v in values if not isinstance(v, RowError)] == ["good", "pair", "escaped-backslash"]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_build_over_lone_surrogates_completes_and_quarantines_each(tmp_path: Path, suffix: str) -> None:
    data = write_dataset(tmp_path / "data", suffix)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "mmat_core", "build", "--source", "jsonl", "--source-path", str(data), "--tools", "",
         "--critics", "answer_match", "--formatters", "rr", "--set", "search=null", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    quarantined = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in quarantined) == ["invalid_utf8"] * len(LONE)
    kept = [json.loads(line)["id"] for line in (out / "rr.jsonl").read_text().splitlines()]
    assert sorted(kept) == ["jsonl/escaped-backslash/0", "jsonl/good/0", "jsonl/pair/0"]
