"""The ``face_detection`` operator on real photos (OpenCV's bundled Haar cascades)."""

from __future__ import annotations

import re
from pathlib import Path

from mmat_plugins.tools.faces import FaceDetectionTool, describe_faces

from tests.tools.conftest import run_tool

ONE_FACE = re.compile(r"^There is one face with a coordinate: \[(\d+), (\d+), (\d+), (\d+)\]$")


def test_one_face_is_reported_in_the_spec_sentence_with_pixel_coordinates(photos: dict[str, Path]) -> None:
    call = run_tool(FaceDetectionTool(), photos["astronaut"])
    match = ONE_FACE.match(call.result)
    assert match, call.result
    x1, y1, x2, y2 = map(int, match.groups())
    # The astronaut's face sits in the upper middle of the 512x512 photo.
    assert 100 < x1 < x2 < 350 and 0 < y1 < y2 < 300
    assert call.data == {"boxes": [[x1, y1, x2, y2]]}


def test_a_photo_without_faces_says_there_is_none(photos: dict[str, Path]) -> None:
    call = run_tool(FaceDetectionTool(), photos["coffee"])
    assert call.result == "There is no face in the image."
    assert call.data == {"boxes": []}


def test_several_faces_are_counted_in_words() -> None:
    assert describe_faces([[1, 2, 3, 4], [5, 6, 7, 8]]) == "There are two faces with coordinates: [1, 2, 3, 4], [5, 6, 7, 8]"


def test_downscaling_keeps_coordinates_in_original_pixels(photos: dict[str, Path]) -> None:
    full = run_tool(FaceDetectionTool(), photos["astronaut"]).data["boxes"][0]
    small = run_tool(FaceDetectionTool(max_side=256, min_size=12), photos["astronaut"]).data["boxes"][0]
    assert all(abs(a - b) <= 24 for a, b in zip(full, small))
