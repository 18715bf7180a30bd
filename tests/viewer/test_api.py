"""The viewer's JSON API, over real HTTP, on a real run made by the pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mmat_plugins.viewer.server import ViewerServer
from tests.viewer.conftest import LABEL_BOXES, XSS_QUESTION, BuiltRun


@pytest.fixture(scope="module")
def viewer(built_run: BuiltRun) -> Iterator[ViewerServer]:
    server = ViewerServer.open(built_run.out, plugins=built_run.plugins).start()
    assert server.wait_indexed()
    yield server
    server.close()


def get(server: ViewerServer, path: str, **params: Any) -> Any:
    response = httpx.get(server.url.rstrip("/") + path, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def ids(page: dict[str, Any]) -> list[str]:
    return [row["id"] for row in page["rows"]]


def test_list_pages_through_every_sample_with_a_seq_cursor(viewer: ViewerServer) -> None:
    seen, after = [], 0
    while after is not None:
        page = get(viewer, "/api/samples", after=after, limit=2)
        assert len(page["rows"]) <= 2
        seen += [row["seq"] for row in page["rows"]]
        after = page["next"]
    assert seen == [1, 2, 3, 4, 5, 6]


def test_status_filter_lists_only_that_status(viewer: ViewerServer) -> None:
    assert ids(get(viewer, "/api/samples", status="reflected")) == ["viewer/recheck-count"]
    assert ids(get(viewer, "/api/samples", status="dropped")) == ["viewer/rejected-chart"]


def test_source_and_subset_filters_combine(viewer: ViewerServer) -> None:
    page = get(viewer, "/api/samples", source="viewer_tiny", subset="photos")
    assert ids(page) == ["viewer/astronaut-people"]
    assert page["count"] == 1


def test_tool_filter_lists_samples_that_called_the_operator(viewer: ViewerServer) -> None:
    assert ids(get(viewer, "/api/samples", tool="face_detection")) == ["viewer/astronaut-people"]


def test_verdict_filter_matches_a_critic_or_any_critic(viewer: ViewerServer) -> None:
    assert ids(get(viewer, "/api/samples", verdict="recheck:fix")) == ["viewer/recheck-count"]
    assert ids(get(viewer, "/api/samples", verdict="*:reject")) == ["viewer/rejected-chart"]


def test_search_finds_words_of_thoughts_not_only_questions(viewer: ViewerServer) -> None:
    # "evidence" is in the offline backend's thoughts, never in a question.
    assert get(viewer, "/api/samples", q="evidence")["count"] == 6
    assert ids(get(viewer, "/api/samples", q="space agency")) == ["viewer/shuttle-agency"]


def test_search_text_is_not_read_as_query_syntax(viewer: ViewerServer) -> None:
    page = get(viewer, "/api/samples", q='"<script>"(')
    assert ids(page) == ["viewer/script-question"]


def test_quarantined_rows_are_listed_with_their_reason(viewer: ViewerServer) -> None:
    page = get(viewer, "/api/samples", status="quarantined")
    assert page["quarantine"] is True
    assert [(r["row"], r["reason"], r["detail"]) for r in page["rows"]] == [("rows.jsonl:7", "image_missing", "scan-0007.png")]


def test_info_reports_a_finished_run_and_the_filter_values(viewer: ViewerServer) -> None:
    info = get(viewer, "/api/info")
    assert info["state"] == "finished"
    assert info["facets"]["statuses"] == {"kept": 4, "reflected": 1, "dropped": 1, "quarantined": 1}
    assert {t["name"] for t in info["facets"]["tools"]} == {"ocr", "face_detection", "image_caption", "test_label_boxes"}


def test_sample_rr_and_orr_equal_the_exported_lines(viewer: ViewerServer, built_run: BuiltRun) -> None:
    rr, orr = built_run.exported("rr.jsonl"), built_run.exported("orr.jsonl")
    for sample_id in rr:
        view = get(viewer, f"/api/sample/{built_run.seq_of(sample_id)}")
        assert view["rr"] == rr[sample_id]
        assert view["orr"] == orr[sample_id]


def test_a_dropped_sample_says_it_was_not_exported(viewer: ViewerServer, built_run: BuiltRun) -> None:
    view = get(viewer, f"/api/sample/{built_run.seq_of('viewer/rejected-chart')}")
    assert "not exported" in view["export_note"]


def test_boxes_keep_label_bbox_normalised_and_face_boxes_in_pixels(viewer: ViewerServer, built_run: BuiltRun) -> None:
    view = get(viewer, f"/api/sample/{built_run.seq_of('viewer/astronaut-people')}")
    faces = [b for b in view["boxes"] if b["tool"] == "face_detection"]
    labels = {b["label"]: b["box"] for b in view["boxes"] if b["tool"] == "test_label_boxes"}
    assert faces and all(b["units"] == "px" and b["box"][2] > 1 for b in faces)
    assert labels == {name: boxes[0] for name, boxes in LABEL_BOXES.items()}
    assert {b["units"] for b in view["boxes"] if b["tool"] == "test_label_boxes"} == {"norm"}


def test_sample_view_carries_dialogue_verdicts_and_neighbours(viewer: ViewerServer, built_run: BuiltRun) -> None:
    seq = built_run.seq_of("viewer/recheck-count")
    view = get(viewer, f"/api/sample/{seq}")
    kinds = [step["kind"] for step in view["trace"]["steps"]]
    assert "reflection" in kinds and "correction" in kinds
    assert ("recheck", "fix") in {(v["critic"], v["verdict"]) for v in view["trace"]["verdicts"]}
    assert view["neighbours"] == {"prev": seq - 1, "next": seq + 1}


def test_neighbours_follow_the_filters(viewer: ViewerServer, built_run: BuiltRun) -> None:
    seq = built_run.seq_of("viewer/script-question")
    view = get(viewer, f"/api/sample/{seq}", tool="ocr")
    assert view["neighbours"] == {"prev": built_run.seq_of("viewer/receipt-total"), "next": built_run.seq_of("viewer/recheck-count")}


def test_question_with_markup_comes_back_verbatim(viewer: ViewerServer, built_run: BuiltRun) -> None:
    view = get(viewer, f"/api/sample/{built_run.seq_of('viewer/script-question')}")
    assert view["trace"]["sample"]["question"] == XSS_QUESTION


def test_image_route_serves_the_sample_image(viewer: ViewerServer, built_run: BuiltRun) -> None:
    seq = built_run.seq_of("viewer/astronaut-people")
    response = httpx.get(f"{viewer.url}api/image/{seq}/0")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == (built_run.out.parent / "astronaut.jpg").read_bytes()


@pytest.mark.parametrize("path", ["api/image/1/1", "api/image/99/0", "api/image/1/..%2F..%2Fetc%2Fpasswd",
                                  "static/..%2F__init__.py", "static/server.py"])
def test_nothing_but_referenced_images_and_page_files_is_served(viewer: ViewerServer, path: str) -> None:
    assert httpx.get(viewer.url + path).status_code == 404


def test_requests_naming_another_host_are_refused(viewer: ViewerServer) -> None:
    response = httpx.get(viewer.url + "api/info", headers={"Host": f"attacker.example:{viewer.port}"})
    assert response.status_code == 403


def test_every_response_forbids_inline_script(viewer: ViewerServer) -> None:
    for path in ("", "api/info", "static/app.js"):
        policy = httpx.get(viewer.url + path).headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_dashboard_counts_the_run(viewer: ViewerServer) -> None:
    board = get(viewer, "/api/dashboard")
    assert board["generated"] == 6 and board["quarantined"] == 1
    assert {s["stage"]: s["count"] for s in board["stages"]}["kept"] == 5
    assert {t["tool"]: t["calls"] for t in board["tool_calls"]}["face_detection"] == 1
    assert board["reflection"]["reflected"] == 1 and board["reflection"]["with_reflection_steps"] == 1
    assert {f["reason"] for f in board["failures"]} == {"recheck"}
    assert {f["reason"] for f in board["quarantine_reasons"]} == {"image_missing"}
    assert board["latency"]["sampled"] == 6
    assert {row["name"] for row in board["latency"]["tool_calls"]} >= {"ocr", "face_detection"}


def test_served_on_every_interface_it_still_refuses_foreign_host_names() -> None:
    probe = object.__new__(ViewerServer)  # only the Host check is exercised: no socket is opened
    probe.host, probe.port = "0.0.0.0", 8765
    assert probe.host_allowed("attacker.example:8765") is False
    assert probe.host_allowed("192.0.2.7:8765") and probe.host_allowed("localhost:8765")


def test_paper_comparison_is_what_mmat_stats_compare_paper_gives(viewer: ViewerServer, built_run: BuiltRun) -> None:
    from mmat_core.stats import compare_to_paper, run_stats

    board = get(viewer, "/api/paper")
    assert board["origin"] == "run.json"  # the build stored its figures
    assert board["rows"] == [row.model_dump(mode="json") for row in compare_to_paper(run_stats(built_run.out))]
    rows = {(r["section"], r["figure"]): r for r in board["rows"]}
    assert rows["operators", "face_detection"]["build_count"] == 1
    assert rows["operators", "face_detection"]["paper"] == pytest.approx(20_077 / 1_090_263)
    assert rows["collections", "viewer_tiny"]["departs"]
    assert "2507.21924" in board["citation"]


def test_paper_comparison_counts_the_store_when_run_json_has_no_figures(built_run: BuiltRun, tmp_path: Any) -> None:
    import json
    import shutil

    from mmat_core.stats import run_stats

    copy = tmp_path / "run"
    shutil.copytree(built_run.out, copy, ignore=shutil.ignore_patterns("viewer-index.sqlite*"))
    manifest = json.loads((copy / "run.json").read_text(encoding="utf-8"))
    del manifest["stats"]
    (copy / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    with ViewerServer.open(copy, plugins=built_run.plugins).start() as server:
        board = get(server, "/api/paper")
    assert board["origin"] == "store" and board["counted"] == board["total"] == 6
    assert board["stats"] == run_stats(copy).model_dump(mode="json")


def test_paper_comparison_of_a_large_run_is_estimated_from_spread_samples(built_run: BuiltRun, monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Any) -> None:
    import json
    import shutil

    from mmat_plugins.viewer import catalog

    copy = tmp_path / "run"
    shutil.copytree(built_run.out, copy, ignore=shutil.ignore_patterns("viewer-index.sqlite*"))
    manifest = json.loads((copy / "run.json").read_text(encoding="utf-8"))
    manifest["complete"] = False  # as while a build runs: no stored figures yet
    del manifest["stats"]
    (copy / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setattr(catalog, "PAPER_COMPARE_SAMPLE", 3)
    with ViewerServer.open(copy, plugins=built_run.plugins).start() as server:
        board = get(server, "/api/paper")
    assert board["origin"] == "estimate" and board["counted"] == 3 and board["total"] == 6
    assert board["stats"]["generated"] == 3
