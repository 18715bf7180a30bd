"""``mmat_core.model_refs``: what the shared ``--model`` check adds beyond the trainers' tests
(tests/train/test_model_source.py covers folders, the Hub and offline mode)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mmat_core import check_model_source
from mmat_core.errors import ConfigError
from tests.fakes.hub_server import use_fake_hub


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    with use_fake_hub(monkeypatch, tmp_path / "hub-cache") as fake:
        yield fake.paths


def test_offline_mode_passes_a_lora_adapter_in_the_hub_cache(hub: list[str], monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    # An adapter repository holds adapter_config.json, not config.json (huggingface_hub's cache layout).
    repo = tmp_path / "hub-cache" / "models--org--lora"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "adapter_config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_model_source("org/lora", key="adapter")
    assert hub == []


def test_the_error_names_the_option_it_was_given_for(hub: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"^adapter: no folder 'runs/x/y'"):
        check_model_source("runs/x/y", key="adapter")
