"""`mmat export --push-to-hub REPO` against a real HTTP server on 127.0.0.1 that answers the Hub
endpoints a push uses (tests/formats/fake_hub.py); the commands run in subprocesses because
huggingface_hub and datasets read HF_ENDPOINT once, at import."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.formats.conftest import make_image_run
from tests.formats.fake_hub import FakeHub


@pytest.fixture
def hub() -> FakeHub:
    with FakeHub() as server:
        yield server


def hub_env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_fake_token", "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_OFFLINE": "0"}


def push(run: Path, bundle: Path, hub: FakeHub, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmat_core", "export", str(run), "-f", "ms_swift", "--bundle", str(bundle),
                           "--push-to-hub", "me/mmat-data", *extra], env=hub_env(hub, tmp_path), check=False, capture_output=True,
                          text=True, timeout=600)


def test_push_to_hub_uploads_the_data_card_and_licence(hub: FakeHub, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    done = push(make_image_run(tmp_path / "run", tmp_path / "images"), tmp_path / "b", hub, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Pushed the Hugging Face dataset to {hub.url}/datasets/me/mmat-data" in done.stdout
    files = hub.repos["me/mmat-data"]
    assert sorted(files) == ["LICENSE.md", "README.md", "data/train-00000-of-00001.parquet"]
    table = pq.read_table(io.BytesIO(files["data/train-00000-of-00001.parquet"]))
    assert table.num_rows == 3 and all(image["bytes"] for row in table.column("images").to_pylist() for image in row)
    card = files["README.md"].decode()
    assert "## Sources and licences" in card and "license_link: LICENSE.md" in card and "num_examples: 3" in card


def test_push_to_hub_uses_datasets_own_push_after_the_card(hub: FakeHub, tmp_path: Path) -> None:
    done = push(make_image_run(tmp_path / "run", tmp_path / "images"), tmp_path / "b", hub, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [summary for _, summary in hub.commits] == ["mmat: LICENSE.md", "mmat: README.md", "mmat: data"]


def test_pushed_dataset_loads_back_from_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    done = push(make_image_run(tmp_path / "run", tmp_path / "images"), tmp_path / "b", hub, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    script = ("import datasets, json, sys; d = datasets.load_dataset('me/mmat-data', cache_dir=sys.argv[1]);"
              "print(json.dumps([len(r['images']) for r in d['train']]))")
    loaded = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")], env=hub_env(hub, tmp_path),
                            check=False, capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == [1, 1, 2]


def test_push_to_hub_creates_a_private_repository_on_request(hub: FakeHub, tmp_path: Path) -> None:
    done = push(make_image_run(tmp_path / "run", tmp_path / "images"), tmp_path / "b", hub, tmp_path, "--private")
    assert done.returncode == 0, done.stderr[-3000:]
    assert hub.private["me/mmat-data"] is True


def _token_free(folder: Path) -> bool:
    return all(b"hf_fake_token" not in p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_push_to_hub_failing_midway_says_what_reached_the_hub_in_one_line(hub: FakeHub, tmp_path: Path) -> None:
    hub.fail_commits.add("mmat: data")
    done = push(make_image_run(tmp_path / "run", tmp_path / "images"), tmp_path / "b", hub, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Pushed" not in done.stdout
    assert "me/mmat-data" in done.stderr and "the data did not" in done.stderr and "500" in done.stderr
    assert sorted(hub.repos["me/mmat-data"]) == ["LICENSE.md", "README.md"]


def test_push_to_hub_failing_midway_leaves_the_bundle_complete(hub: FakeHub, tmp_path: Path) -> None:
    from mmat_core.exporter import verify_bundle

    hub.fail_commits.add("mmat: data")
    push(make_image_run(tmp_path / "run", tmp_path / "images"), tmp_path / "b", hub, tmp_path)
    assert verify_bundle(tmp_path / "b") == []


def test_push_to_hub_never_writes_the_token(hub: FakeHub, tmp_path: Path) -> None:
    hub.fail_commits.add("mmat: data")  # the error path prints the most
    done = push(make_image_run(tmp_path / "run", tmp_path / "images"), tmp_path / "b", hub, tmp_path)
    assert "hf_fake_token" not in done.stdout + done.stderr
    assert _token_free(tmp_path / "b") and _token_free(tmp_path / "run") and _token_free(tmp_path / "hf_home")
