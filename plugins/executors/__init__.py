"""Built-in executors: ``local`` runs the pipeline in this process with asyncio (local.py); ``ray``
spreads it over a Ray cluster (ray_executor.py).

The executor classes are imported inside the hook, so importing this module stays cheap."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    from mmat_plugins.executors.local import LocalExecutor
    from mmat_plugins.executors.ray_executor import RayExecutor

    from mmat_core import Executor

__all__ = ["LocalExecutor", "RayExecutor", "register_executors"]


@hookimpl
def register_executors(register: Callable[[type[Executor]], None]) -> None:
    """Register the built-in executors."""
    from mmat_plugins.executors.local import LocalExecutor
    from mmat_plugins.executors.ray_executor import RayExecutor

    register(LocalExecutor)
    register(RayExecutor)


def __getattr__(name: str) -> object:
    # The classes stay importable from here, loaded on first use.
    if name == "LocalExecutor":
        from mmat_plugins.executors.local import LocalExecutor

        return LocalExecutor
    if name == "RayExecutor":
        from mmat_plugins.executors.ray_executor import RayExecutor

        return RayExecutor
    raise AttributeError(f"module 'mmat_plugins.executors' has no attribute {name!r}")
