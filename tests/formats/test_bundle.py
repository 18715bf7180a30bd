"""`mmat export --bundle DIR`: rows, the images they use, the card and a manifest in one folder
that loads from anywhere once the run and the original images are gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat_core.cli import main
from mmat_core.errors import ConfigError, OutputDirError
from mmat_core.exporter import BUNDLE_MANIFEST, bundle_run

ALL = ["ms_swift", "llama_factory", "internvl", "llava", "openai_chat", "rr", "orr"]


def moved_bundle(image_run: Path, tmp_path: Path, formats: list[str] = ALL) -> Path:
    """A bundle made from the run, then the run and its source images deleted and the bundle moved."""
    bundle_run(image_run, formats, tmp_path / "bundle")
    shutil.rmtree(image_run)
    shutil.rmtree(tmp_path / "source_images")
    return Path(shutil.move(str(tmp_path / "bundle"), str(tmp_path / "elsewhere" / "moved")))


def test_bundle_holds_no_path_outside_itself(image_run: Path, tmp_path: Path) -> None:
    bundle_run(image_run, ALL, tmp_path / "bundle")
    for path in (tmp_path / "bundle").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md"):
            assert str(tmp_path) not in path.read_text(), path.name


def test_bundle_copies_each_image_once_by_content(image_run: Path, tmp_path: Path) -> None:
    bundle_run(image_run, ["ms_swift"], tmp_path / "bundle")
    images = sorted(p.relative_to(tmp_path / "bundle").as_posix() for p in (tmp_path / "bundle" / "images").rglob("*.png"))
    assert len(images) == 4  # three kept traces, one with two images; the dropped trace adds none
    rows = [json.loads(line) for line in (tmp_path / "bundle" / "ms_swift_rr.jsonl").read_text().splitlines()]
    assert sorted(p for row in rows for p in row["images"]) == images
    assert all(Path(p).stem == Path(p).parent.name + Path(p).stem[2:] for p in images)


def test_bundle_manifest_lists_every_file_with_size_and_hash(image_run: Path, tmp_path: Path) -> None:
    import hashlib

    bundle_run(image_run, ["ms_swift", "llama_factory"], tmp_path / "bundle")
    root = tmp_path / "bundle"
    manifest = json.loads((root / BUNDLE_MANIFEST).read_text())
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != BUNDLE_MANIFEST)
    assert [f["path"] for f in manifest["files"]] == on_disk
    for entry in manifest["files"]:
        assert hashlib.sha256((root / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["images"]["count"] == 4 and manifest["formats"]["ms_swift"] == ["ms_swift_rr.jsonl"]


def test_bundle_loads_with_datasets_after_the_run_is_deleted_and_the_bundle_moved(image_run: Path, tmp_path: Path) -> None:
    import datasets

    bundle = moved_bundle(image_run, tmp_path)
    loaded = datasets.load_dataset(str(bundle), cache_dir=str(tmp_path / "cache"))
    rows = loaded["train"]
    assert rows.num_rows == 3 and [len(r["images"]) for r in rows] == [1, 1, 2]
    assert rows[2]["images"][1].size == (32, 24)


def test_bundle_image_paths_resolve_against_the_moved_folder(image_run: Path, tmp_path: Path) -> None:
    bundle = moved_bundle(image_run, tmp_path)
    swift = [json.loads(line) for line in (bundle / "ms_swift_rr.jsonl").read_text().splitlines()]
    internvl = [json.loads(line) for line in (bundle / "internvl_rr.jsonl").read_text().splitlines()]
    llava = json.loads((bundle / "llava_rr.json").read_text())
    paths = [p for r in swift for p in r["images"]] + [p for r in internvl for p in r["image"]] + [r["image"] for r in llava]
    assert paths and all((bundle / p).is_file() for p in paths)


def test_bundle_leaves_out_a_trace_whose_image_is_gone(image_run: Path, tmp_path: Path) -> None:
    next((tmp_path / "source_images").glob("infoseek*")).unlink()
    result = bundle_run(image_run, ["ms_swift"], tmp_path / "bundle")
    assert [(r.row, r.reason, r.stage) for r in result.rejected] == [("infoseek/val/oven_04", "image_missing", "bundle")]
    assert len((tmp_path / "bundle" / "ms_swift_rr.jsonl").read_text().splitlines()) == 2


def test_bundle_refuses_a_folder_that_is_not_empty(image_run: Path, tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "x").write_text("")
    with pytest.raises(OutputDirError, match="new or empty"):
        bundle_run(image_run, ["ms_swift"], tmp_path / "bundle")


def test_bundle_refuses_an_image_root_of_its_own(image_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="relative to itself"):
        bundle_run(image_run, [{"name": "ms_swift", "image_root": "/data"}], tmp_path / "bundle")


def test_export_command_writes_a_bundle(image_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(image_run), "-f", "ms_swift", "--bundle", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "bundle:" in result.output and (tmp_path / "b" / BUNDLE_MANIFEST).is_file() and (tmp_path / "b" / "README.md").is_file()


def test_export_command_refuses_bundle_and_out_together(image_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(image_run), "-f", "ms_swift", "--bundle", str(tmp_path / "b"),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "--bundle" in result.output


def test_export_command_refuses_push_to_hub_without_a_hugging_face_dataset(image_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(image_run), "-f", "ms_swift", "--out", str(tmp_path / "o"),
                                       "--push-to-hub", "me/data"])
    assert result.exit_code != 0 and "--format hf_dataset or --bundle" in result.output
