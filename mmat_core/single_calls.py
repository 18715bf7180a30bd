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

from mmat_core.errors import ConfigError

if TYPE_CHECKING:
    from mmat_core.components import Component
    from mmat_core.models import SourceSample, ToolCall
    from mmat_core.plugins import PluginManager


def create_component(family: str, spec: str | dict[str, Any], *, key: str | None = None,
                     manager: PluginManager | None = None) -> Component:
    """An instance of the ``family`` component that ``spec`` names, with its options checked.

    ``spec`` is written as in a configuration: a name, or ``{"name": ..., **options}``. A wrong
    option is a :class:`ConfigError` naming ``key.option`` (``key`` defaults to the family) and
    what is allowed; an unknown name lists the registered ones.
    """
    from pydantic import ValidationError

    from mmat_core.config import validation_error
    from mmat_core.plugins import get_plugin_manager

    options = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key or family}: a component needs a 'name'")
    cls = (manager or get_plugin_manager()).get(family, name)
    try:
        return cls(cls.Options(**options))
    except ValidationError as exc:
        raise validation_error(exc, cls.Options, None, prefix=f"{key or family}.") from None


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

    backend = create_component("llm", llm, key="llm", manager=manager)
    tool = create_component("tool", {"name": name, **(options or {})}, key="tool", manager=manager)
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
