"""One component, called once, outside a build: what ``mmat tool run`` does, and what a Python
user calls to try a tool by hand.

::

    from mmat_core.single_calls import run_tool

    call = run_tool("ocr", "receipt.png")   # a ToolCall: result, data, error, latency

The call goes through the same engine a build uses (argument validation, the worker pool,
timeouts, the LLM client with its scheduler for tools that ask a model), so a tool behaves here
as in a run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmat_core.models import SourceSample, ToolCall
    from mmat_core.plugins import PluginManager


def run_tool(name: str, image: str | Path, *, args: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
             question: str = "Describe the image.", llm: str | dict[str, Any] = "offline",
             manager: PluginManager | None = None) -> ToolCall:
    """Run operator ``name`` (with tool ``options``) on one image with ``args``, and return the call.

    ``question`` is what tools that read it (``image_caption``, ``label_bbox``) see; ``llm`` is the
    backend such tools ask (a name or ``{"name": ..., **options}``). A failed call is returned with
    its ``error`` set, as in a build; bad options or names raise :class:`ConfigError`, an image
    that cannot be read :class:`~mmat_core.images.ImageError`, before any work.
    """
    from mmat_core.images import ImageStore, image_ref_from_file
    from mmat_core.models import SourceSample
    from mmat_core.run.assembly import create_component

    backend = create_component("llm", llm, key="llm", plugins=manager)
    tool = create_component("tool", {"name": name, **(options or {})}, key="tool", plugins=manager)
    ref = image_ref_from_file(Path(image))  # an unreadable or unsafe image raises ImageError
    sample = SourceSample(id=f"cli/{Path(image).name}", source="cli", question=question, answers=["?"], images=[ref])
    return asyncio.run(_call_tool(backend, tool, args or {}, sample, ImageStore()))


async def _call_tool(backend: Any, tool: Any, args: dict[str, Any], sample: SourceSample, images: Any) -> ToolCall:
    from mmat_core.engine.client import EngineClient
    from mmat_core.engine.scheduler import Scheduler
    from mmat_core.engine.tools import ToolRunner

    client = EngineClient(backend, Scheduler(), images)
    runner = ToolRunner([tool], images, llm=client, workers=1)
    try:
        return await runner.call(tool.name, args, runner.context(sample, {}))
    finally:
        runner.close()
        await backend.aclose()
