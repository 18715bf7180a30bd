"""RunStore.open_existing: the one "open the run store or say why not" of the commands that read a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmat_core.errors import ConfigError
from mmat_core.store import STORE_FILE, RunStore


def test_a_folder_without_a_store_is_explained_and_left_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"no run store \(run.sqlite\) in {tmp_path}: is this an mmat run directory\?"):
        RunStore.open_existing(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_named_like_the_store_is_no_store(tmp_path: Path) -> None:
    (tmp_path / STORE_FILE).mkdir()
    with pytest.raises(ConfigError, match="give the folder mmat build wrote"):
        RunStore.open_existing(tmp_path, hint="give the folder mmat build wrote")


def test_an_existing_store_is_opened(tmp_path: Path) -> None:
    RunStore.open(tmp_path).close()
    store = RunStore.open_existing(tmp_path)
    try:
        assert store.path == tmp_path / STORE_FILE and store.count() == 0
    finally:
        store.close()
