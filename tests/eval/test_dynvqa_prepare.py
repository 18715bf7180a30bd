"""The released Dyn-VQA file made ready for the lmms-eval task: kept rows, and rows set aside with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mmat_plugins.evaluation.lmms.dynvqa import image_name, prepare_dynvqa
from PIL import Image

from mmat_core import ConfigError

URL = "https://example.org/rallm/Freshqa_en_extracted_images/image_{}.jpeg"


def released(tmp_path: Path, rows: list[object], images: tuple[int, ...] = (1,)) -> Path:
    """A DynVQA_en.jsonl in the released layout, with an images/ folder holding the given image numbers."""
    (tmp_path / "images").mkdir()
    for number in images:
        Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / f"image_{number}.jpeg")
    path = tmp_path / "DynVQA_en.jsonl"
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n" for row in rows))
    return path


def row(number: int, **extra: object) -> dict[str, object]:
    return {"image_url": URL.format(number), "question": "How many humans have landed on this planet?",
            "question_id": f"en{number}", "answer": ["目前还没有人类去过火星。", 0, "zero"],
            "gloden_query": "How many humans have landed on Mars?", **extra}


def test_answers_of_mixed_types_become_strings_and_images_local_paths(tmp_path: Path) -> None:
    prepared = prepare_dynvqa(released(tmp_path, [row(1)]), None, tmp_path / "out.jsonl")
    [kept] = [json.loads(line) for line in prepared.path.read_text().splitlines()]
    assert kept["answer"] == ["目前还没有人类去过火星。", "0", "zero"]
    assert kept["image"] == str((tmp_path / "images" / "image_1.jpeg").resolve())
    assert kept["gloden_query"] == "How many humans have landed on Mars?" and prepared.kept == 1


def test_rows_without_image_golden_query_or_json_are_set_aside_with_reasons(tmp_path: Path) -> None:
    rows: list[object] = [row(1), row(2), row(1, gloden_query=None), "{not json", row(1, answer=[])]
    prepared = prepare_dynvqa(released(tmp_path, rows), None, tmp_path / "out.jsonl")
    assert prepared.kept == 1
    assert [(r["row"].rsplit(":", 1)[1], r["reason"]) for r in prepared.rejected] == [
        ("2", "image_missing"), ("3", "no_golden_query"), ("4", "invalid_json"), ("5", "no_answer")]


def test_question_mode_keeps_rows_without_a_golden_query(tmp_path: Path) -> None:
    prepared = prepare_dynvqa(released(tmp_path, [row(1, gloden_query=None)]), None, tmp_path / "o.jsonl", golden=False)
    assert prepared.kept == 1


def test_a_file_with_no_usable_row_is_a_config_error_naming_the_reasons(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no usable question.*image_missing"):
        prepare_dynvqa(released(tmp_path, [row(2)]), None, tmp_path / "out.jsonl")


def test_a_missing_images_folder_is_a_config_error_naming_it(tmp_path: Path) -> None:
    source = tmp_path / "DynVQA_en.jsonl"
    source.write_text(json.dumps(row(1)) + "\n")
    with pytest.raises(ConfigError, match="images folder .*images does not exist"):
        prepare_dynvqa(source, None, tmp_path / "out.jsonl")


def test_the_local_image_name_is_the_last_segment_of_the_url_path() -> None:
    assert image_name("https://h/a/b/IMG_7102.JPG-tiny-2048x0-0.5x0.jpg?x=1") == "IMG_7102.JPG-tiny-2048x0-0.5x0.jpg"
