"""The engine's tool runner: validation, caching, timeouts, ordering, errors as observations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest
from mmat_plugins.tools.faces import FaceDetectionTool
from mmat_plugins.tools.label_bbox import LabelBoxTool

from mmat_core.components import Tool, ToolContext, ToolOutput
from mmat_core.engine.cache import Cache
from mmat_core.engine.tools import ToolRunner, argument_hint, plan_batches, validate_args
from mmat_core.errors import ToolArgumentError
from mmat_core.images import ImageStore
from tests.tools.conftest import run_tool, sample_for


class CountingTool(Tool):
    """Counts its runs; echoes its argument; keeps a note in the scratch space."""

    name = "counting"
    version = "1"
    description = "count"
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "properties": {"word": {"type": "string", "maxLength": 10}}, "additionalProperties": False}
    runs = 0

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Echo the word, in the worker pool."""
        type(self).runs += 1
        ctx.scratch["note"] = args.get("word", "")
        text = await ctx.blocking(str.upper, args.get("word", "none"))
        return ToolOutput(text=text)


class SlowTool(Tool):
    """Never finishes within its timeout."""

    name = "slow"
    description = "slow"
    timeout_s: ClassVar[float] = 0.05

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Sleep past the timeout."""
        await asyncio.sleep(5)
        return ToolOutput(text="late")


class BrokenTool(Tool):
    """Raises."""

    name = "broken"
    description = "broken"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Fail."""
        raise ValueError("the model file is missing")


@pytest.fixture
def image(photos: dict[str, Path]) -> Path:
    """A real photo."""
    return photos["coffee"]


def test_a_cached_result_is_reused_on_rerun_without_running_the_tool(tmp_path: Path, image: Path) -> None:
    CountingTool.runs = 0
    cache = Cache(tmp_path / "cache.sqlite")
    first = run_tool(CountingTool(), image, args={"word": "hi"}, runner=ToolRunner([CountingTool()], ImageStore(), cache=cache))
    rerun = ToolRunner([CountingTool()], ImageStore(), cache=cache)
    scratch: dict[str, Any] = {}
    second = run_tool(CountingTool(), image, args={"word": "hi"}, runner=rerun, scratch=scratch)
    assert (first.result, first.cached, second.result, second.cached) == ("HI", False, "HI", True)
    assert CountingTool.runs == 1
    assert scratch == {"note": "hi"}  # what the tool left in the scratch space comes back with the hit
    assert rerun.stats.cached == {"counting": 1}


def test_the_cache_key_holds_the_arguments_and_the_image(tmp_path: Path, photos: dict[str, Path]) -> None:
    CountingTool.runs = 0
    runner = ToolRunner([CountingTool()], ImageStore(), cache=Cache(tmp_path / "cache.sqlite"))
    for word, name in (("a", "coffee"), ("b", "coffee"), ("a", "astronaut"), ("a", "coffee")):
        run_tool(CountingTool(), photos[name], args={"word": word}, runner=runner)
    assert CountingTool.runs == 3


def test_invalid_arguments_become_an_observation_and_an_error_count(image: Path) -> None:
    runner = ToolRunner([CountingTool()], ImageStore())
    call = run_tool(CountingTool(), image, args={"word": "far too long a word"}, runner=runner)
    assert call.result == ("The counting operator failed: invalid arguments for counting at word: "
                           "'far too long a word' is too long")
    assert runner.errors == {"counting": 1}


def test_arguments_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(ToolArgumentError, match="must be an object, got list"):
        validate_args(CountingTool, ["rm -rf /"])


def test_a_tool_past_its_timeout_is_reported_not_awaited(image: Path) -> None:
    call = run_tool(SlowTool(), image)
    assert call.error == "timed out after 0.05s"


def test_the_timeout_option_of_a_built_in_tool_overrides_its_default(image: Path) -> None:
    from mmat_core.engine.tools import tool_timeout

    assert tool_timeout(FaceDetectionTool(timeout_s=2.5)) == 2.5
    assert tool_timeout(FaceDetectionTool()) == FaceDetectionTool.timeout_s


def test_a_raising_tool_becomes_an_error_observation(image: Path) -> None:
    call = run_tool(BrokenTool(), image)
    assert call.result == "The broken operator failed: ValueError: the model file is missing"


def test_an_unknown_operator_names_the_enabled_ones(image: Path) -> None:
    runner = ToolRunner([CountingTool(), BrokenTool()], ImageStore())
    call = asyncio.run(runner.call("ocrr", {}, runner.context(sample_for(image), {})))
    assert call.error == "unknown operator 'ocrr'; enabled: counting, broken"


def test_label_bbox_waits_for_image_caption_when_both_are_chosen() -> None:
    tools = {"label_bbox": LabelBoxTool.__new__(LabelBoxTool), "ocr": CountingTool(), "image_caption": CountingTool()}
    assert plan_batches(["label_bbox", "ocr", "image_caption"], tools) == [["ocr", "image_caption"], ["label_bbox"]]
    assert plan_batches(["label_bbox", "ocr"], tools) == [["label_bbox", "ocr"]]


def test_call_many_returns_results_in_the_order_chosen(image: Path) -> None:
    runner = ToolRunner([CountingTool(), BrokenTool()], ImageStore())
    calls = asyncio.run(runner.call_many([("broken", {}), ("counting", {"word": "x"})], runner.context(sample_for(image), {})))
    assert [c.name for c in calls] == ["broken", "counting"]


def test_argument_hints_describe_tools_that_take_arguments() -> None:
    assert argument_hint(CountingTool) == "word (optional string)"
    assert argument_hint(FaceDetectionTool) == ""
