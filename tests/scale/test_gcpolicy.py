"""The run's garbage-collector policy: set for the run, restored after it, and off on request."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from mmat_core.config import EngineSettings
from mmat_core.engine.gcpolicy import DEFAULT_THRESHOLD, run_gc


def test_the_threshold_is_set_inside_and_restored_after() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    with run_gc(12_345):
        assert gc.get_threshold() == (12_345, before[1], before[2])
        # What existed on entry (at least this module and its imports) is out of the collector's view.
        assert gc.get_freeze_count() > frozen_before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_collector_is_restored_when_the_run_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), run_gc(30_000):
        raise RuntimeError("a crashed run")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("off", [None, 0])
def test_null_or_zero_leaves_the_collector_alone(off: int | None) -> None:
    before = gc.get_threshold()
    with run_gc(off):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0


def test_cyclic_garbage_is_still_collected_inside_a_run() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: reference counting alone never frees it

    with run_gc(1_000):
        node = Node()
        ref = weakref.ref(node)
        del node
        kept = [[] for _ in range(5_000)]  # allocations past the threshold start a collection
        assert ref() is None
        assert len(kept) == 5_000


def test_the_setting_defaults_to_the_policy_and_a_build_applies_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert EngineSettings().gc_threshold == DEFAULT_THRESHOLD
    from mmat_core.run import local as run_module

    seen: list[int | None] = []
    real = run_module.run_gc

    def spy(threshold: int | None):  # type: ignore[no-untyped-def]
        seen.append(threshold)
        return real(threshold)

    monkeypatch.setattr(run_module, "run_gc", spy)
    from mmat_core.config import PipelineConfig
    from mmat_core.pipeline import Pipeline

    config = PipelineConfig.model_validate({"engine": {"gc_threshold": 7_000}})
    result = Pipeline(tools=[], critics=[], search=False, config=config).run(tmp_path / "run")
    assert result.manifest is not None
    assert seen == [7_000]
    assert gc.get_threshold()[0] != 7_000
