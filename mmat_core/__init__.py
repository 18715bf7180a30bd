"""mmat: the MMAT-1M multimodal agent-tuning data engine.

The public API is imported lazily so that ``import mmat_core`` (and ``mmat --help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmat_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from mmat_core.config import PipelineConfig, load_config
    from mmat_core.pipeline import Pipeline, RunResult
    from mmat_core.plugins import PluginManager, get_plugin_manager

__all__ = ["Pipeline", "PipelineConfig", "PluginManager", "RunResult", "get_plugin_manager", "hookimpl", "load_config"]

_LAZY = {
    "Pipeline": "mmat_core.pipeline",
    "RunResult": "mmat_core.pipeline",
    "PipelineConfig": "mmat_core.config",
    "load_config": "mmat_core.config",
    "PluginManager": "mmat_core.plugins",
    "get_plugin_manager": "mmat_core.plugins",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmat_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
