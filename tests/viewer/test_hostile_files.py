"""``mmat view hostile.jsonl``: the image route serves only regular files under the JSONL's folder
(or blobs of its ``images/`` store named by a real SHA-256), never a FIFO, a device, a path that
escapes the folder, or a file over the size cap. Over real HTTP, with a real FIFO and symlinks."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mmat_plugins.viewer.server import ViewerServer
from tests.viewer.conftest import render_receipt

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")


def rr_row(key: str, image: str) -> dict[str, object]:
    """An RR record naming one image path."""
    return {"id": key, "images": [image], "messages": [
        {"role": "user", "content": f"<image>What is shown in {key}? Please start your reasoning."},
        {"role": "assistant", "content": "<THOUGHT>Looking.</THOUGHT><SIGNAL>end</SIGNAL>"},
        {"role": "user", "content": "Based on the above information, please summarize and give the answer to the initial question: what?"},
        {"role": "assistant", "content": "42"}]}


def trace_row(key: str, sha256: str, path: str | None) -> dict[str, object]:
    """A Trace-shaped row naming one image by hash (and maybe path)."""
    return {"id": key, "steps": [], "status": "kept",
            "sample": {"id": key, "source": "hostile", "question": "What?", "answers": ["42"],
                       "images": [{"sha256": sha256, "path": path}]}}


def secret_image(path: Path) -> bytes:
    """A PNG outside the served folder, different from every image inside it."""
    from PIL import Image

    Image.new("RGB", (64, 48), "crimson").save(path)
    return path.read_bytes()


@dataclass
class Hostile:
    """A served hostile JSONL file and what its rows name, by row id."""

    server: ViewerServer
    seqs: dict[str, int]
    good: bytes
    private: bytes

    def image(self, key: str) -> httpx.Response:
        return httpx.get(f"{self.server.url}api/image/{self.seqs[key]}/0", timeout=20)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    root = tmp_path_factory.mktemp("hostile")
    folder, private = root / "shared", root / "private"
    folder.mkdir()
    private.mkdir()
    good = render_receipt(folder / "ok.png").read_bytes()
    secret = secret_image(private / "x.png")
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "out.png").symlink_to(private / "x.png")  # inside the folder by name, outside by target
    (folder / "dir.png").mkdir()
    digest_good, digest_secret = hashlib.sha256(good).hexdigest(), hashlib.sha256(secret).hexdigest()
    blobs = folder / "images"
    (blobs / digest_good[:2]).mkdir(parents=True)
    (blobs / digest_good[:2] / digest_good).write_bytes(good)
    (blobs / digest_secret[:2]).mkdir(parents=True, exist_ok=True)
    (blobs / digest_secret[:2] / digest_secret).symlink_to(private / "x.png")
    rows = [
        rr_row("good", "ok.png"),
        rr_row("good-absolute", str(folder / "ok.png")),
        rr_row("traversal", "../private/x.png"),
        rr_row("absolute", str(private / "x.png")),
        rr_row("fifo", "fifo.png"),
        rr_row("dev-zero", "zero.png"),
        rr_row("dev-zero-direct", "/dev/zero"),
        rr_row("symlink-out", "out.png"),
        rr_row("directory", "dir.png"),
        trace_row("blob", digest_good, None),
        trace_row("sha-traversal", "../../private/x.png", None),
        trace_row("sha-short", digest_good[:10], None),
        trace_row("blob-symlink-out", digest_secret, None),
        trace_row("trace-path-out", digest_secret, str(private / "x.png")),
    ]
    target = folder / "hostile.jsonl"
    target.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    server = ViewerServer.open(target).start()
    assert server.wait_indexed()
    page = httpx.get(server.url + "api/samples", params={"limit": 100}, timeout=20).json()
    seqs = {row["id"]: row["seq"] for row in page["rows"]}
    assert set(seqs) == {str(row["id"]) for row in rows}
    yield Hostile(server, seqs, good, secret)
    server.close()


def test_an_image_in_the_files_folder_is_served(hostile: Hostile) -> None:
    response = hostile.image("good")
    assert response.status_code == 200 and response.content == hostile.good


def test_an_absolute_path_inside_the_files_folder_is_served(hostile: Hostile) -> None:
    assert hostile.image("good-absolute").content == hostile.good


def test_a_blob_of_the_images_folder_named_by_its_sha256_is_served(hostile: Hostile) -> None:
    assert hostile.image("blob").content == hostile.good


@pytest.mark.parametrize("key", ["traversal", "absolute", "symlink-out", "blob-symlink-out", "trace-path-out"])
def test_a_file_outside_the_files_folder_is_never_served(hostile: Hostile, key: str) -> None:
    response = hostile.image(key)
    assert response.status_code == 404
    assert hostile.private not in response.content


@pytest.mark.parametrize("key", ["sha-traversal", "sha-short"])
def test_a_sha256_that_is_not_64_hex_digits_names_nothing(hostile: Hostile, key: str) -> None:
    assert hostile.image(key).status_code == 404


def test_a_fifo_is_refused_without_hanging(hostile: Hostile) -> None:
    # Before the fix the request blocked in open() until the client gave up (a timeout here).
    assert hostile.image("fifo").status_code == 404


@pytest.mark.parametrize("key", ["dev-zero", "dev-zero-direct", "directory"])
def test_a_device_or_directory_is_refused_without_reading_it(hostile: Hostile, key: str) -> None:
    assert hostile.image(key).status_code == 404


def test_the_server_still_answers_after_every_hostile_request(hostile: Hostile) -> None:
    for key in hostile.seqs:
        hostile.image(key)
    assert hostile.image("good").status_code == 200


def test_an_image_over_the_size_cap_is_refused(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmat_plugins.viewer import dataset

    monkeypatch.setattr(dataset, "MAX_IMAGE_BYTES", len(hostile.good) - 1)
    assert hostile.image("good").status_code == 404
    monkeypatch.setattr(dataset, "MAX_IMAGE_BYTES", len(hostile.good))
    assert hostile.image("good").status_code == 200
