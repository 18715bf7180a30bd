"""Rows that name hostile files, or that are hostile JSON, are quarantined and the run goes on.

Each case goes through a real build (``Pipeline.run_local``): a directory, a FIFO, ``/dev/zero``
and a symlink to it named as images, and lines of JSON nested 100,000 deep in ``.jsonl`` and
``.json`` files. Before the fix the first crashed the build (``IsADirectoryError``) on every rerun,
the FIFO hung it forever, ``/dev/zero`` read until memory ran out, and the nested line raised
``RecursionError``. The readers behind every built-in collection are checked the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mmat_core.config import CurationSettings, PipelineConfig
from mmat_core.images import ImageError, ImageStore, image_ref_from_file, read_regular_file
from mmat_core.models import ImageRef, Rejected, SourceSample
from mmat_core.pipeline import Pipeline
from mmat_plugins.sources import readers
from mmat_plugins.sources.generic import JsonlSource
from mmat_plugins.sources.readers import iter_json_items, iter_jsonl
from mmat_plugins.sources.tabmwp import TabMWPSource
from tests.sources import fixtures

DEPTH = 100_000
#: A value nested DEPTH deep: far past what the JSON parser's recursion allows.
DEEP = "[" * DEPTH + "]" * DEPTH

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(),
                                reason="needs POSIX FIFOs and /dev/zero")


def _row(row_id: str, image: str) -> dict[str, str]:
    return {"id": row_id, "question": f"What is shown in {row_id}?", "answer": "a photo", "image": image}


@pytest.fixture
def hostile_files(tmp_path: Path) -> tuple[Path, Path]:
    """A JSONL file whose rows name: a good image, a directory, a FIFO, /dev/zero, a symlink to
    /dev/zero, and a second good image. ``image_root`` is ``/`` so that every path, /dev/zero
    included, reaches the file reader rather than being refused as escaping the root."""
    data = tmp_path / "data"
    fixtures.save(fixtures.photo("astronaut"), data / "good.jpg")
    fixtures.save(fixtures.photo("coffee"), data / "also_good.jpg")
    (data / "folder.jpg").mkdir()
    os.mkfifo(data / "pipe.jpg")
    os.symlink("/dev/zero", data / "zero_link.jpg")
    rel = str(data).lstrip("/")
    rows = [
        _row("good", f"{rel}/good.jpg"),
        _row("directory", f"{rel}/folder.jpg"),
        _row("fifo", f"{rel}/pipe.jpg"),
        _row("dev_zero", "dev/zero"),
        _row("zero_link", f"{rel}/zero_link.jpg"),
        _row("also_good", f"{rel}/also_good.jpg"),
    ]
    lines: list[Any] = [json.dumps(r).encode() for r in rows]
    lines.insert(3, ('{"id": "deep", "question": "q?", "answer": "a", "image": "x", "meta": ' + DEEP + "}").encode())
    fixtures.write_jsonl(data / "rows.jsonl", lines)
    return data / "rows.jsonl", tmp_path


def _build(rows: Path, out: Path, **source: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
    pipeline = Pipeline(source={"name": "jsonl", "path": str(rows), **source}, llm="offline", tools=[],
                        critics=["answer_match"], formatters=["rr"], search=False)
    result = pipeline.run_local(out)
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    return result, {q["row"]: q for q in quarantine}


@pytest.mark.timeout(120)  # a FIFO once hung the build forever; fail rather than wait
def test_a_build_quarantines_directory_fifo_and_device_images_and_keeps_the_good_rows(
        hostile_files: tuple[Path, Path]) -> None:
    rows, tmp = hostile_files
    result, quarantined = _build(rows, tmp / "run", image_root="/")
    assert {row: q["reason"] for row, q in quarantined.items()} == {
        "rows.jsonl:2": "image_not_a_file",
        "rows.jsonl:3": "image_not_a_file",
        "rows.jsonl:4": "json_too_deep",
        "rows.jsonl:5": "image_not_a_file",
        "rows.jsonl:6": "image_not_a_file",
    }
    assert "directory" in quarantined["rows.jsonl:2"]["detail"]
    assert "FIFO" in quarantined["rows.jsonl:3"]["detail"]
    assert "character device" in quarantined["rows.jsonl:5"]["detail"]
    assert "character device" in quarantined["rows.jsonl:6"]["detail"]
    kept = [json.loads(line)["id"] for line in (tmp / "run" / "rr.jsonl").read_text().splitlines()]
    assert len(kept) == 2
    assert result.manifest.yield_by_source["jsonl"].rejected == 5


@pytest.mark.timeout(180)
def test_a_rerun_into_the_same_folder_completes_with_the_same_quarantine(hostile_files: tuple[Path, Path]) -> None:
    rows, tmp = hostile_files
    _, first = _build(rows, tmp / "run", image_root="/")
    _, second = _build(rows, tmp / "run", image_root="/")
    assert {r: q["reason"] for r, q in second.items()} == {r: q["reason"] for r, q in first.items()}


def test_a_json_array_with_an_item_nested_100000_deep_quarantines_that_item_alone(tmp_path: Path) -> None:
    fixtures.save(fixtures.photo("astronaut"), tmp_path / "good.jpg")
    good = {"id": "good", "question": "Who is this?", "answer": "an astronaut", "image": "good.jpg"}
    after = {"id": "after", "question": "What colour is the suit?", "answer": "white", "image": "good.jpg"}
    deep_field = '{"id": "deep", "question": "q?", "answer": "a", "image": "good.jpg", "x": ' + DEEP + "}"
    (tmp_path / "rows.json").write_text(f"[{json.dumps(good)}, {DEEP}, {deep_field}, {json.dumps(after)}]")
    result, quarantined = _build(tmp_path / "rows.json", tmp_path / "run")
    assert {r: q["reason"] for r, q in quarantined.items()} == {"rows.json#1": "json_too_deep",
                                                               "rows.json#2": "json_too_deep"}
    assert result.manifest.yield_by_source["jsonl"].generated == 2


def test_tabmwp_quarantines_a_problem_nested_100000_deep_and_reads_the_next(tmp_path: Path) -> None:
    root = fixtures.tabmwp(tmp_path / "tabmwp")
    problems = json.loads((root / "problems_train.json").read_text())
    text = json.dumps({"101": problems["101"]})[:-1] + ', "666": {"question": ' + DEEP + "}, " + \
        json.dumps({"202": problems["202"]})[1:]
    (root / "problems_train.json").write_text(text)
    rows = list(TabMWPSource(path=str(root)).iter_rows())
    assert [r.id if isinstance(r, SourceSample) else (r.row, r.reason) for r in rows] == [
        "tabmwp/train/101/0", ("problems_train.json#666", "json_too_deep"), "tabmwp/train/202/0"]


def test_the_streaming_json_reader_steps_over_a_deep_item_that_spans_several_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "CHUNK_CHARS", 4096)  # the deep item spans ~50 reads
    path = tmp_path / "items.json"
    path.write_text('{"a": {"n": 1}, "b": {"s": "]]\\"[[", "v": ' + DEEP + '}, "c": {"n": 3}}')
    items = [(ref, getattr(value, "reason", value)) for ref, value in iter_json_items(path)]
    assert items == [("items.json#a", {"n": 1}), ("items.json#b", "json_too_deep"), ("items.json#c", {"n": 3})]


def test_the_line_reader_quarantines_a_deep_line_and_reads_the_next(tmp_path: Path) -> None:
    path = fixtures.write_jsonl(tmp_path / "rows.jsonl", [{"n": 1}, DEEP.encode(), {"n": 3}])
    items = [(ref, getattr(value, "reason", value)) for ref, value in iter_jsonl(path)]
    assert items == [("rows.jsonl:1", {"n": 1}), ("rows.jsonl:2", "json_too_deep"), ("rows.jsonl:3", {"n": 3})]


def test_a_source_row_failing_in_an_unforeseen_way_is_quarantined_and_the_rows_after_it_come(tmp_path: Path) -> None:
    class Exploding(JsonlSource):
        def normalise(self, ref: str, subset: str | None, record: Any) -> list[SourceSample]:
            if record.get("id") == "boom":
                raise OSError("the disk said no")  # nothing a source author listed
            return super().normalise(ref, subset, record)

    fixtures.save(fixtures.photo("astronaut"), tmp_path / "good.jpg")
    rows = fixtures.write_jsonl(tmp_path / "rows.jsonl", [
        {"id": "boom", "question": "q?", "answer": "a", "image": "good.jpg"},
        {"id": "fine", "question": "Who is this?", "answer": "an astronaut", "image": "good.jpg"}])
    out = list(Exploding(path=str(rows)).iter_rows())
    assert isinstance(out[0], Rejected) and out[0].reason == "malformed_row" and "OSError" in out[0].detail
    assert isinstance(out[1], SourceSample) and out[1].id == "jsonl/fine/0"


def test_a_reader_that_fails_mid_file_ends_its_source_with_one_read_failed_entry(tmp_path: Path) -> None:
    class Breaking(JsonlSource):
        def iter_records(self):  # type: ignore[no-untyped-def]
            yield "rows.jsonl:1", None, {"id": "x", "question": "q?", "answer": "a", "image": "good.jpg"}
            raise OSError("input/output error")

    fixtures.save(fixtures.photo("astronaut"), tmp_path / "good.jpg")
    rows = fixtures.write_jsonl(tmp_path / "rows.jsonl", [{}])
    out = list(Breaking(path=str(rows)).iter_rows())
    assert isinstance(out[0], SourceSample)
    assert isinstance(out[1], Rejected) and out[1].reason == "read_failed" and "input/output error" in out[1].detail


# ---- the one safe reader ---------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("make", "words"), [
    (lambda d: (d / "dir").mkdir() or d / "dir", "a directory"),
    (lambda d: os.mkfifo(d / "fifo") or d / "fifo", "a FIFO"),
    (lambda d: Path("/dev/zero"), "a character device"),
    (lambda d: os.symlink("/dev/zero", d / "z") or d / "z", "a character device"),
], ids=["directory", "fifo", "dev_zero", "symlink_to_dev_zero"])
def test_read_regular_file_refuses_what_is_not_a_regular_file(tmp_path: Path, make: Any, words: str) -> None:
    with pytest.raises(ImageError) as caught:
        read_regular_file(make(tmp_path), 1024, 5)
    assert caught.value.reason == "image_not_a_file"
    assert words in caught.value.detail


def test_read_regular_file_refuses_a_file_over_the_cap_unread(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(b"x" * 2048)
    with pytest.raises(ImageError) as caught:
        read_regular_file(tmp_path / "big.png", 1024, 5)
    assert caught.value.reason == "image_too_large"


def test_read_regular_file_reads_a_regular_file_at_the_cap(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(b"x" * 1024)
    assert read_regular_file(tmp_path / "ok.png", 1024, 5) == b"x" * 1024


def test_read_regular_file_gives_up_when_the_deadline_has_passed(tmp_path: Path) -> None:
    (tmp_path / "slow.png").write_bytes(b"x" * 10)
    with pytest.raises(ImageError) as caught:
        read_regular_file(tmp_path / "slow.png", 1024, 0)  # a deadline already over: a stalled mount
    assert caught.value.reason == "image_read_timeout"


def test_read_regular_file_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as caught:
        read_regular_file(tmp_path / "gone.png")
    assert caught.value.reason == "image_missing"


@pytest.mark.timeout(60)
def test_image_ref_from_file_reads_through_the_safe_reader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(ImageError) as caught:
        image_ref_from_file(tmp_path / "fifo.png")
    assert caught.value.reason == "image_not_a_file"


@pytest.mark.timeout(60)
def test_the_image_store_tools_and_backends_load_from_refuses_a_fifo_swapped_in(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "swapped.png")
    ref = ImageRef(sha256="0" * 64, path=str(tmp_path / "swapped.png"))
    with pytest.raises(ImageError) as caught:
        ImageStore(tmp_path / "images").load(ref)
    assert caught.value.reason == "image_not_a_file"


def test_the_image_store_applies_its_size_cap(tmp_path: Path) -> None:
    fixtures.save(fixtures.photo("astronaut"), tmp_path / "a.png")
    ref = image_ref_from_file(tmp_path / "a.png")
    with pytest.raises(ImageError) as caught:
        ImageStore(None, max_bytes=100).load(ref)
    assert caught.value.reason == "image_too_large"


def test_the_image_store_never_globs_a_hash_that_is_not_64_hex_digits(tmp_path: Path) -> None:
    (tmp_path / "images" / "..").mkdir(parents=True, exist_ok=True)
    with pytest.raises(ImageError) as caught:
        ImageStore(tmp_path / "images").load(ImageRef(sha256="../../etc/passwd", path=None))
    assert caught.value.reason == "image_missing"


def test_curation_max_image_bytes_reaches_the_source_reader_in_a_build(tmp_path: Path) -> None:
    fixtures.save(fixtures.photo("astronaut"), tmp_path / "good.jpg")
    rows = fixtures.write_jsonl(tmp_path / "rows.jsonl", [_row("good", "good.jpg")])
    pipeline = Pipeline(source={"name": "jsonl", "path": str(rows)}, llm="offline", tools=[], critics=["answer_match"],
                        formatters=["rr"], search=False,
                        config=PipelineConfig(curation=CurationSettings(max_image_bytes=100)))
    pipeline.run_local(tmp_path / "run")
    quarantine = [json.loads(line) for line in (tmp_path / "run" / "quarantine.jsonl").read_text().splitlines()]
    assert [q["reason"] for q in quarantine] == ["image_too_large"]


# ---- the other readers of image bytes ------------------------------------------------------------


def test_an_export_skips_an_image_over_the_size_cap_without_reading_it(tmp_path: Path) -> None:
    from mmat_core.components import FormatContext
    from mmat_core.writers import SkipTrace
    from mmat_plugins.formatters.base import image_bytes

    with (tmp_path / "huge.png").open("wb") as fh:
        fh.truncate(60 * 1024 * 1024)  # sparse: 60 MiB on paper, nothing on disk
    with pytest.raises(SkipTrace) as caught:
        image_bytes({"path": str(tmp_path / "huge.png"), "sha256": ""}, FormatContext())
    assert caught.value.reason == "image_too_large"


@pytest.mark.timeout(60)
def test_the_runtime_refuses_a_fifo_as_an_image(tmp_path: Path) -> None:
    from mmat_plugins.agent.chat import data_url

    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageError) as caught:
        data_url(tmp_path / "pipe.png")
    assert caught.value.reason == "image_not_a_file"


@pytest.mark.timeout(120)
def test_a_build_quarantines_a_line_longer_than_the_cap_and_keeps_the_next_row(tmp_path: Path) -> None:
    from mmat_core.jsonl import DEFAULT_MAX_LINE_BYTES

    data = tmp_path / "data"
    fixtures.save(fixtures.photo("astronaut"), data / "good.jpg")
    huge = {"id": "huge", "question": "q" * (DEFAULT_MAX_LINE_BYTES + 10), "answer": "a", "image": "good.jpg"}
    lines = [json.dumps(_row("good", "good.jpg")).encode(), json.dumps(huge).encode(),
             json.dumps(_row("after", "good.jpg")).encode()]
    fixtures.write_jsonl(data / "rows.jsonl", lines)
    del lines, huge
    result, quarantined = _build(data / "rows.jsonl", tmp_path / "run", image_root=str(data))
    assert {row: q["reason"] for row, q in quarantined.items()} == {"rows.jsonl:2": "line_too_long"}
    kept = [json.loads(line)["id"] for line in (tmp_path / "run" / "rr.jsonl").read_text().splitlines()]
    assert sorted(kept) == ["jsonl/after/0", "jsonl/good/0"]
