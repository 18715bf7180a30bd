"""The in-process run: the four phases of :mod:`mmat_core.run.phases`, in order, in one event loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mmat_core.engine.gcpolicy import run_gc
from mmat_core.run.context import ProgressCallback, RunResult
from mmat_core.run.phases import (
    close,
    decide_manifest,
    generate,
    prepare,
    publish_outputs,
    write_engine_report,
    write_manifest,
)

if TYPE_CHECKING:
    from mmat_core.pipeline import Pipeline


async def run_local(pipeline: Pipeline, out_dir: Path, progress: ProgressCallback | None = None) -> RunResult:
    """Build every unfinished sample of ``pipeline`` into ``out_dir``, then write the outputs,
    ``run.json`` and ``engine.json``: prepare, generate, decide the manifest, publish."""
    # A long run tunes the garbage collector for its allocation pattern (engine/gcpolicy.py).
    with run_gc(pipeline.config.engine.gc_threshold):
        run = prepare(pipeline, out_dir, progress=progress)
        try:
            generation_s = await generate(run)
            manifest = decide_manifest(pipeline, run.store, run.counts, run.engine_totals(),
                                       started_at=run.started_at, generation_s=generation_s)
            published = publish_outputs(pipeline, run.store, out_dir, manifest, run.images)
            manifest = write_manifest(out_dir, run.store, manifest, published, total_s=time.monotonic() - run.started)
            report = run.client.report()
            write_engine_report(out_dir, report)
        finally:
            await close(run)
    return RunResult(out_dir, manifest, published.files, engine=report)
