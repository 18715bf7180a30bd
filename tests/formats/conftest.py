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


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def make_image_run(run_dir: Path, image_dir: Path) -> Path:
    """A run whose traces have real images on disk: the three multi-turn cases, the table case
    with two images (the multi-image, multi-turn fixture), and a dropped trace."""
    from mmat_core.images import sha256_bytes
    from mmat_core.models import ImageRef

    colours = iter([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)])
    traces = [cases.ocr_receipt(), cases.dropped_case(), cases.rag_landmark(), cases.math_reflection()]
    for trace in traces:
        if trace.status == "dropped":
            continue
        count = 2 if trace.id.startswith("tabmwp") else 1
        refs = []
        for k in range(count):
            path = image_dir / f"{trace.id.replace('/', '_')}_{k}.png"
            data = _png(path, next(colours))
            refs.append(ImageRef(sha256=sha256_bytes(data), path=str(path), width=32, height=24, format="PNG"))
        trace.sample.images = refs
    traces[1].sample.images = traces[0].sample.images
    store = RunStore.open(run_dir)
    for seq, trace in enumerate(traces, 1):
        store.add_trace(seq, trace)
    store.flush()
    store.set_meta("config", PipelineConfig(tools=[t.name for t in cases.TOOLS]).model_dump(mode="json"))
    store.set_meta(FORMAT_CONTEXT_KEY, context_to_meta(cases.context()))
    store.close()
    return run_dir


@pytest.fixture
def image_run(tmp_path: Path) -> Path:
    """A run folder whose traces have real images (one with two), kept outside the run folder."""
    return make_image_run(tmp_path / "run", tmp_path / "source_images")
