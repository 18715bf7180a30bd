"""The viewer on exported JSONL files, on a run still being written, and from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from mmat_core.store import RunStore
from mmat_plugins.viewer.catalog import Catalog, Filters
from mmat_plugins.viewer.dataset import Dataset
from mmat_plugins.viewer.server import ViewerServer
from tests.viewer.conftest import BuiltRun


def get(server: ViewerServer, path: str, **params: Any) -> Any:
    response = httpx.get(server.url.rstrip("/") + path, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    """Poll until ``condition`` holds (a wait, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_rr_jsonl_shows_each_step_read_back_from_its_tags(built_run: BuiltRun) -> None:
    with ViewerServer.open(built_run.out / "rr.jsonl").start() as server:
        assert server.wait_indexed()
        info = get(server, "/api/info")
        assert info["state"] == "file"
        page = get(server, "/api/samples", status="reflected")
        assert [row["id"] for row in page["rows"]] == ["viewer/recheck-count"]
        view = get(server, f"/api/sample/{page['rows'][0]['seq']}")
        assert view["kind"] == "rr"
        assert [s["signal"] for s in view["trace"]["steps"]][-2:] == ["reflection", "end"]
        assert view["rr"] == built_run.exported("rr.jsonl")["viewer/recheck-count"]


def test_rr_jsonl_reads_face_boxes_back_from_the_observation(built_run: BuiltRun) -> None:
    with ViewerServer.open(built_run.out / "rr.jsonl").start() as server:
        assert server.wait_indexed()
        row = get(server, "/api/samples", tool="face_detection")["rows"][0]
        view = get(server, f"/api/sample/{row['seq']}")
        assert [b["units"] for b in view["boxes"] if b["tool"] == "face_detection"] == ["px"]


def test_jsonl_images_outside_its_folder_are_served_only_from_a_named_image_root(built_run: BuiltRun) -> None:
    # rr.jsonl lies in the run folder; the dataset's images lie one folder up.
    with ViewerServer.open(built_run.out / "rr.jsonl").start() as server:
        assert server.wait_indexed()
        seq = get(server, "/api/samples", tool="face_detection")["rows"][0]["seq"]
        assert httpx.get(f"{server.url}api/image/{seq}/0").status_code == 404
    with ViewerServer.open(built_run.out / "rr.jsonl", image_roots=[built_run.out.parent]).start() as server:
        assert server.wait_indexed()
        response = httpx.get(f"{server.url}api/image/{seq}/0")
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content == (built_run.out.parent / "astronaut.jpg").read_bytes()


def test_orr_jsonl_lists_the_operator_outputs_of_each_record(built_run: BuiltRun) -> None:
    with ViewerServer.open(built_run.out / "orr.jsonl").start() as server:
        assert server.wait_indexed()
        row = get(server, "/api/samples", q="helmet")["rows"][0]
        view = get(server, f"/api/sample/{row['seq']}")
        assert view["kind"] == "orr"
        assert [c["name"] for c in view["trace"]["steps"][0]["tool_calls"]] == ["face_detection", "test_label_boxes", "image_caption"]
        assert view["trace"]["final_answer"] == "1"


def test_unreadable_lines_of_a_jsonl_file_are_listed_as_quarantined(built_run: BuiltRun, tmp_path: Path) -> None:
    lines = (built_run.out / "orr.jsonl").read_text(encoding="utf-8").splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], "{not json", '{"a": 1}', lines[1]]) + "\n", encoding="utf-8")
    with ViewerServer.open(broken).start() as server:
        assert server.wait_indexed()
        assert get(server, "/api/samples")["count"] == 2
        rows = get(server, "/api/samples", status="quarantined")["rows"]
        assert [(r["row"], r["reason"]) for r in rows] == [("broken.jsonl:2", "viewer_unreadable_line"), ("broken.jsonl:3", "viewer_unreadable_line")]


def test_a_running_run_is_indexed_as_its_samples_arrive(built_run: BuiltRun, tmp_path: Path) -> None:
    finished = RunStore.open(built_run.out)
    traces = list(finished.traces())
    finished.close()
    live = RunStore.open(tmp_path)
    for seq, trace in enumerate(traces[:2], 1):
        live.add_trace(seq, trace)
    live.flush()
    server = ViewerServer.open(tmp_path, plugins=built_run.plugins, poll_s=0.05).start()
    try:
        assert server.wait_indexed()
        assert get(server, "/api/info")["state"] == "running"
        assert get(server, "/api/samples")["count"] == 2
        for seq, trace in enumerate(traces[2:], 3):
            live.add_trace(seq, trace)
        live.flush()
        wait_for(lambda: get(server, "/api/samples", q="evidence")["count"] == len(traces), "the new samples to be indexed")
    finally:
        server.close()
        live.close()


def test_lists_served_from_the_store_while_indexing_match_the_index(built_run: BuiltRun, tmp_path: Path) -> None:
    dataset = Dataset.open(built_run.out, built_run.plugins)
    catalog = Catalog(dataset, tmp_path)
    filters = [Filters(), Filters(status="reflected"), Filters(tool="ocr"), Filters(verdict="recheck:fix"),
               Filters(verdict="*:reject"), Filters(subset="photos"), Filters(q="Space Shuttle")]
    try:
        before = [catalog.page(f) for f in filters]
        catalog.refresh()
        after = [catalog.page(f) for f in filters]
    finally:
        catalog.close()
        dataset.close()
    assert {p["via"] for p in before} == {"store"} and {p["via"] for p in after} == {"index"}
    assert [[r["id"] for r in p["rows"]] for p in before] == [[r["id"] for r in p["rows"]] for p in after]


def test_view_command_prints_its_address_and_serves_the_run(built_run: BuiltRun, tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from mmat_core.cli import run; run()", "view", str(built_run.out), "--port", "0",
               "--index-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("mmat viewer on http://127.0.0.1:"), line
        url = line.split()[3]
        info = httpx.get(url + "api/info", timeout=30).json()
        assert info["label"] == str(built_run.out)
        assert (tmp_path / "viewer-index.sqlite").exists()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_view_command_explains_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", "from mmat_core.cli import run; run()", "view", str(tmp_path), "--port", "0"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "has no run.sqlite" in result.stderr and "mmat build --out DIR" in result.stderr


def test_index_is_rebuilt_when_the_run_directory_holds_a_new_run(built_run: BuiltRun, tmp_path: Path) -> None:
    finished = RunStore.open(built_run.out)
    traces = list(finished.traces())
    finished.close()
    first = RunStore.open(tmp_path / "run")
    first.add_trace(1, traces[0])
    first.close()
    with ViewerServer.open(tmp_path / "run", plugins=built_run.plugins) as server:
        server.catalog.refresh()
    for name in os.listdir(tmp_path / "run"):
        if name.startswith("run.sqlite"):
            os.remove(tmp_path / "run" / name)
    second = RunStore.open(tmp_path / "run")
    second.add_trace(1, traces[1])
    second.close()
    with ViewerServer.open(tmp_path / "run", plugins=built_run.plugins) as server:
        server.catalog.refresh()
        assert [r["id"] for r in server.catalog.page(Filters())["rows"]] == [traces[1].id]
        assert server.catalog.page(Filters(q="TOTAL"))["count"] == 0
