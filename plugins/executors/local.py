"""The ``local`` executor: the whole pipeline in this process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mmat_core import Executor

if TYPE_CHECKING:
    from mmat_core import Pipeline, RunResult


class LocalExecutor(Executor):
    """Runs the whole pipeline in this process: one asyncio loop, a worker pool for CPU-bound tools."""

    name = "local"
    version = "1"
    description = "in-process asyncio executor (the default)"

    def execute(self, pipeline: Pipeline, out_dir: Path) -> RunResult:
        """Run ``pipeline`` into ``out_dir``."""
        return pipeline.run_local(out_dir)
