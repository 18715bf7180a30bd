"""Built-in executors: ``local`` runs the pipeline in this process with asyncio; ``ray`` spreads it
over a Ray cluster (see ray_executor.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mmat_core import Executor, hookimpl
from mmat_plugins.executors.ray_executor import RayExecutor

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


@hookimpl
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    """Register the built-in executors."""
    register(LocalExecutor)
    register(RayExecutor)
