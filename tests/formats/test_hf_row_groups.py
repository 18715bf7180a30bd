"""hf_dataset embed mode bounds a parquet row group by bytes as well as rows: with photos of
several hundred KB, 1,000 rows buffered at once would hold hundreds of MB of image bytes."""

from __future__ import annotations

import io
from pathlib import Path

from mmat_core.exporter import export_run
from mmat_core.images import sha256_bytes
from mmat_core.models import ImageRef, Trace
from mmat_core.store import RunStore
from tests.formats.conftest import make_image_run


def _big_images(run: Path, image_dir: Path) -> None:
    """Give every stored trace its own PNG of random pixels, about 800 KB (incompressible)."""
    import os

    from PIL import Image

    store = RunStore.open(run)
    traces = [Trace.model_validate_json(raw) for raw in store.trace_json()]
    for seq, trace in enumerate(traces, 1):
        buffer = io.BytesIO()
        Image.frombytes("RGB", (520, 520), os.urandom(520 * 520 * 3)).save(buffer, format="PNG")
        path = image_dir / f"big_{seq}.png"
        path.write_bytes(buffer.getvalue())
        trace.sample.images = [ImageRef(sha256=sha256_bytes(buffer.getvalue()), path=str(path), format="PNG")]
        store.add_trace(seq, trace)
    store.flush()
    store.close()


def test_hf_dataset_embed_starts_a_row_group_when_the_byte_budget_is_reached(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    run = make_image_run(tmp_path / "run", tmp_path / "images")
    _big_images(run, tmp_path / "images")
    result = export_run(run, [{"name": "hf_dataset", "max_group_mb": 1}], tmp_path / "out")
    parquet = next(p for p in result.files["hf_dataset"] if p.suffix == ".parquet")
    meta = pq.ParquetFile(parquet).metadata
    assert meta.num_rows == 3 and meta.num_row_groups >= 2
