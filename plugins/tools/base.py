"""Options every built-in tool shares."""

from __future__ import annotations

from pydantic import Field

from mmat_core.components import ComponentOptions


class ToolOptions(ComponentOptions):
    """Options common to the built-in tools; the engine reads ``timeout_s`` (see engine/tools.py)."""

    timeout_s: float | None = Field(None, gt=0, description="seconds before a call is abandoned; default: the tool's own")
