"""The ``ocr`` operator on rendered text with known content (real PP-OCR models via rapidocr)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmat_plugins.tools.ocr import OCRTool, reading_order

from tests.tools.conftest import render_text, run_tool


@pytest.fixture(scope="module")
def ocr() -> OCRTool:
    """One OCR tool for the module (its engine loads once per thread)."""
    return OCRTool()


def test_ocr_reads_rendered_text_in_reading_order(ocr: OCRTool, tmp_path: Path) -> None:
    image = render_text(tmp_path / "text.png", ["TOTAL 42.50", "Harbour Road"])
    call = run_tool(ocr, image)
    assert call.error is None
    assert call.result == "TOTAL 42.50 Harbour Road"
    assert [line["text"] for line in call.data["lines"]] == ["TOTAL 42.50", "Harbour Road"]


def test_ocr_reports_line_boxes_in_pixels(ocr: OCRTool, tmp_path: Path) -> None:
    image = render_text(tmp_path / "text.png", ["INVOICE 2024"])
    box = run_tool(ocr, image).data["lines"][0]["box"]
    assert 0 <= box[0] < box[2] <= 520 and 0 <= box[1] < box[3] <= 200


def test_ocr_says_so_when_an_image_has_no_text(ocr: OCRTool, tmp_path: Path) -> None:
    image = render_text(tmp_path / "blank.png", [])
    assert run_tool(ocr, image).result == "No text was recognised."


def test_reading_order_groups_lines_by_row_then_left_to_right() -> None:
    lines = [{"text": "b", "box": [100, 12, 150, 30]}, {"text": "c", "box": [0, 60, 40, 80]},
             {"text": "a", "box": [0, 10, 50, 30]}]
    assert [line["text"] for line in reading_order(lines, tolerance=12)] == ["a", "b", "c"]


def test_ocr_refuses_arguments_its_schema_does_not_allow(ocr: OCRTool, tmp_path: Path) -> None:
    image = render_text(tmp_path / "text.png", ["HELLO"])
    call = run_tool(ocr, image, args={"language": "en"})
    assert call.error is not None and "'language' was unexpected" in call.error
    assert call.result.startswith("The ocr operator failed: invalid arguments for ocr")


def test_ocr_failure_on_an_undecodable_image_becomes_an_observation(ocr: OCRTool, tmp_path: Path) -> None:
    image = render_text(tmp_path / "text.png", ["HELLO"])
    from tests.tools.conftest import sample_for

    sample = sample_for(image)
    image.write_bytes(b"not an image")  # the bytes no longer match the hash the sample holds
    import asyncio

    from mmat_core.engine.tools import ToolRunner
    from mmat_core.images import ImageStore

    runner = ToolRunner([ocr], ImageStore(), workers=1)
    call = asyncio.run(runner.call("ocr", {}, runner.context(sample, {})))
    runner.close()
    assert call.error is not None and "image_changed" in call.error
    assert runner.errors == {"ocr": 1}
