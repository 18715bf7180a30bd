"""An unexpected exception in the engine itself (not a data or model problem, which end as reasons
on their sample) stops the run early: the samples in flight are stored, no new one starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mmat_core import Pipeline, hookimpl
from mmat_core.components import Source
from mmat_core.images import image_ref_from_file
from mmat_core.models import Rejected, SourceSample
from mmat_core.plugins import PluginManager
from mmat_core.store import RunStore
from tests.core.conftest import make_png


def test_an_engine_error_stops_feeding_samples_and_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = make_png(tmp_path / "a.png")

    class Many(Source):
        name = "many"

        def iter_rows(self) -> Iterator[SourceSample | Rejected]:
            ref = image_ref_from_file(image)
            for i in range(200):
                yield SourceSample(id=f"many/{i}", source="many", question=f"Question {i}?", answers=["42"], images=[ref])

    class Plugin:
        @staticmethod
        @hookimpl
        def register_sources(register: Callable) -> None:
            register(Many)

    original = RunStore.add_trace

    def add_trace(self: RunStore, seq: int, trace: Any, *args: Any, **kwargs: Any) -> None:
        if trace.id == "many/3":
            raise OSError(28, "No space left on device")  # what a full disk looks like
        original(self, seq, trace, *args, **kwargs)

    monkeypatch.setattr(RunStore, "add_trace", add_trace)
    pm = PluginManager()
    pm.register(Plugin, "failfast")
    pipeline = Pipeline(source="many", tools=[], critics=[], search=False, plugins=pm)
    pipeline.config.engine.concurrency = 2
    with pytest.raises(OSError, match="No space left"):
        pipeline.run(tmp_path / "run")
    monkeypatch.undo()
    store = RunStore.open(tmp_path / "run")
    try:
        finished = store.count()
    finally:
        store.close()
    assert 3 <= finished < 20  # those before and beside the error are kept; the rest never started
    assert not (tmp_path / "run" / "rr.jsonl").exists()
