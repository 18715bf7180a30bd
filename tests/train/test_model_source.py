"""`--model` is checked before transformers sees it: a folder or a Hub model passes, anything else fails at once.

The Hub is a real HTTP server on 127.0.0.1 (HF_ENDPOINT points at it); an unreachable Hub is a
closed local port. No test reaches the internet.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from mmat_plugins.trainers.model_source import check_model_source

from mmat_core.cli import main
from mmat_core.errors import ConfigError
from tests.fakes.hub_server import closed_port, use_fake_hub


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """A fake Hub on 127.0.0.1 (holds org/present), an empty Hub cache, online mode; yields the requested paths."""
    with use_fake_hub(monkeypatch, tmp_path / "hub-cache") as fake:
        yield fake.paths


def test_an_existing_folder_passes_without_asking_the_hub(hub: list[str], tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    check_model_source(str(tmp_path / "model"))
    assert hub == []


def test_a_model_the_hub_has_passes_after_one_request(hub: list[str]) -> None:
    check_model_source("org/present")
    assert hub == ["/api/models/org/present"]


def test_a_model_the_hub_lacks_fails_after_one_request_with_the_tiny_model_hint(hub: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"^model: 'tiny-vlm' .*has no model 'tiny-vlm'.*`mmat tiny-model tiny-vlm`"):
        check_model_source("tiny-vlm")
    assert hub == ["/api/models/tiny-vlm"]  # no retries


def test_an_unreachable_hub_fails_at_once(hub: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ConfigError, match=r"'org/model' is not a folder here and the Hugging Face Hub cannot be reached"):
        check_model_source("org/model")


def test_offline_mode_fails_without_any_request(hub: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"not in the Hugging Face cache, and the Hub is off"):
        check_model_source("org/present")
    assert hub == []


def test_offline_mode_passes_a_model_in_the_hub_cache(hub: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The cache layout huggingface_hub writes: refs/main names the snapshot holding the files.
    repo = tmp_path / "hub-cache" / "models--org--cached"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_model_source("org/cached")
    assert hub == []


def test_a_path_that_does_not_exist_fails_without_asking_the_hub(hub: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"no folder 'runs/nothing/here' \(and it is not a Hugging Face model id\)"):
        check_model_source("runs/nothing/here")
    assert hub == []


def test_a_file_given_as_model_is_refused(hub: list[str], tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"is a file, not a model folder"):
        check_model_source(str(tmp_path / "weights.bin"))


def test_mmat_train_with_a_missing_model_fails_with_one_line_naming_it(hub: list[str], tmp_path: Path,
                                                                        training_files: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(main, ["train", "--trainer", "hf-lora", "--data", str(training_files[0]),
                                       "--model", "tiny-vlm", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "'tiny-vlm'" in str(result.exception) and "mmat tiny-model" in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "run").exists()  # refused before anything was written
