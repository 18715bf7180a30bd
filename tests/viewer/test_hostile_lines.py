"""``mmat view hostile.jsonl`` on lines that parse into something no store can hold: a line
nested deeper than the JSON parser allows (RecursionError) and a line whose ``\\uD800``-style
escapes leave a lone surrogate (SQLite stores UTF-8). Each becomes one unreadable-line row and
the other rows are served; before, either one stopped the viewer from opening at all."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from mmat_plugins.viewer.server import ViewerServer

from tests.viewer.test_hostile_files import rr_row

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerServer]:
    root = tmp_path_factory.mktemp("lines")
    lines = [json.dumps(rr_row("first", "x.png")), DEEP, json.dumps(rr_row("lone-\udcff", "x.png")),
             json.dumps(rr_row("lone-image", "x\ud800.png")), json.dumps(rr_row("emoji-\U0001F600", "x.png")),
             json.dumps(rr_row("last", "x.png")), json.dumps(rr_row("nul-path", "x\x00.png"))]
    target = root / "hostile.jsonl"
    target.write_text("\n".join(lines) + "\n", encoding="ascii")
    server = ViewerServer.open(target).start()
    assert server.wait_indexed()
    yield server
    server.close()


def test_the_rows_around_unstorable_lines_are_served(served: ViewerServer) -> None:
    page = httpx.get(served.url + "api/samples", params={"limit": 100}, timeout=20).json()
    assert [row["id"] for row in page["rows"]] == ["first", "emoji-\U0001F600", "last", "nul-path"]


def test_each_unstorable_line_is_one_unreadable_line_row(served: ViewerServer) -> None:
    rejected = served.dataset.connect().execute("SELECT row, reason FROM rejected ORDER BY row").fetchall()
    assert rejected == [("hostile.jsonl:2", "viewer_unreadable_line"), ("hostile.jsonl:3", "viewer_unreadable_line"),
                        ("hostile.jsonl:4", "viewer_unreadable_line")]


def test_an_image_path_with_a_nul_byte_is_not_found_not_a_server_error(served: ViewerServer) -> None:
    page = httpx.get(served.url + "api/samples", params={"limit": 100}, timeout=20).json()
    (seq,) = [row["seq"] for row in page["rows"] if row["id"] == "nul-path"]
    assert httpx.get(f"{served.url}api/image/{seq}/0", timeout=20).status_code == 404
