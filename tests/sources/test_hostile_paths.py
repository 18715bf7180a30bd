"""Image paths a dataset row may name that are not files at all: a symlink loop, a NUL byte, a
name the file system cannot encode. Each is an ImageError with the quarantine reason the docs
promise (docs/sources.md), from ``resolve_within`` and from ``read_regular_file`` alike, never a
bare RuntimeError or ValueError that lands as ``malformed_row`` (or, outside a source, escapes
the caller's ``except ImageError``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmat_core.images import ImageError, ImageStore, read_regular_file, resolve_within
from mmat_core.models import ImageRef


@pytest.fixture
def loop(tmp_path: Path) -> Path:
    os.symlink("loop_b", tmp_path / "loop_a")
    os.symlink("loop_a", tmp_path / "loop_b")
    return tmp_path


def test_resolving_a_symlink_loop_is_image_unreadable(loop: Path) -> None:
    with pytest.raises(ImageError) as caught:
        resolve_within(loop, "loop_a")
    assert caught.value.reason == "image_unreadable"


def test_reading_a_symlink_loop_is_image_unreadable(loop: Path) -> None:
    with pytest.raises(ImageError) as caught:
        read_regular_file(loop / "loop_a")
    assert caught.value.reason == "image_unreadable"


@pytest.mark.parametrize("name", ["im\x00g.png", "im\ud800g.png"], ids=["nul-byte", "lone-surrogate"])
def test_a_path_no_file_can_have_is_image_unreadable_when_resolved(tmp_path: Path, name: str) -> None:
    with pytest.raises(ImageError) as caught:
        resolve_within(tmp_path, name)
    assert caught.value.reason == "image_unreadable"


@pytest.mark.parametrize("name", ["im\x00g.png", "im\ud800g.png"], ids=["nul-byte", "lone-surrogate"])
def test_a_path_no_file_can_have_is_image_unreadable_when_read(tmp_path: Path, name: str) -> None:
    with pytest.raises(ImageError) as caught:
        read_regular_file(str(tmp_path / name))
    assert caught.value.reason == "image_unreadable"


def test_the_image_store_raises_image_error_for_a_nul_byte_path(tmp_path: Path) -> None:
    # Tools and backends load through the store and handle ImageError; a ValueError escaped them.
    with pytest.raises(ImageError):
        ImageStore(tmp_path).load(ImageRef(sha256="0" * 64, path=str(tmp_path / "a\x00b.png")))
