"""Fixtures for the scale and reliability tests: the stub plugin, in process and in subprocesses."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmat_core.plugins import PluginManager, set_plugin_manager
from tests.scale import plugin as stubs

#: Flags that build the generated source with the stub tool and the counting offline backend.
STUB_BUILD = ["--source", "generated", "--llm", "counting_offline", "--tools", "ocr",
              "--critics", "answer_match,general", "--formatters", "rr,orr", "--set", "search=null"]


@pytest.fixture
def stub_manager() -> Iterator[PluginManager]:
    """The installed plugins minus the real tools, plus the stubs; the process default for the test."""
    manager = PluginManager(block=["tools"])
    manager.register(stubs, "scale-stubs")
    set_plugin_manager(manager)
    yield manager
    set_plugin_manager(None)


@pytest.fixture
def stub_env(tmp_path: Path) -> dict[str, str]:
    """Environment in which a subprocess loads the stubs through an ``mmat`` entry point."""
    return stubs.install_entry_point(tmp_path / "site")


def mmat_command(*args: str) -> list[str]:
    """The real command line (``python -m mmat_core``) with the built-in tools blocked."""
    return [sys.executable, "-m", "mmat_core", "-p", "no:tools", *args]


def run_mmat(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``mmat`` to completion in a subprocess."""
    return subprocess.run(mmat_command(*args), capture_output=True, text=True, timeout=timeout, env=env, check=False)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON Lines file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cached_model_keys(run_dir: Path) -> set[str]:
    """Keys of the model calls stored in a run's cache."""
    path = run_dir / "cache.sqlite"
    if not path.exists():
        return set()
    with sqlite3.connect(str(path)) as db:
        return {row[0] for row in db.execute("SELECT key FROM entries WHERE kind='model'")}
