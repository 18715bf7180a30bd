"""Fixtures of the format tests: a real run store filled with the hand-written cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmat_core.config import PipelineConfig
from mmat_core.exporter import FORMAT_CONTEXT_KEY, context_to_meta
from mmat_core.store import RunStore
from tests.formats import cases


def make_run(run_dir: Path, *, with_context: bool = True) -> Path:
    """A run folder holding the three cases and a dropped trace, like `mmat build` leaves it."""
    store = RunStore.open(run_dir)
    for seq, trace in enumerate([cases.ocr_receipt(), cases.dropped_case(), cases.rag_landmark(), cases.math_reflection()], 1):
        store.add_trace(seq, trace)
    store.flush()
    config = PipelineConfig(tools=[t.name for t in cases.TOOLS])
    store.set_meta("config", config.model_dump(mode="json"))
    if with_context:
        store.set_meta(FORMAT_CONTEXT_KEY, context_to_meta(cases.context()))
    store.close()
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder with the golden cases stored."""
    return make_run(tmp_path / "run")
