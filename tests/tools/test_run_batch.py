"""``Tool.run_batch``: the contract every tool shares (the Ray tool services call it)."""

from __future__ import annotations

import asyncio
from typing import Any

from mmat_core import Tool, ToolContext, ToolOutput
from mmat_core.images import ImageStore
from mmat_core.models import SourceSample


class Echo(Tool):
    """A third-party tool with no batching of its own: it answers with its argument."""

    name = "echo"
    version = "1"
    description = "say the word back"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        if args.get("word") == "boom":
            raise ValueError("boom")
        return ToolOutput(text=f"{ctx.sample.id}:{args['word']}")


def _ctx(sample_id: str) -> ToolContext:
    return ToolContext(sample=SourceSample(id=sample_id, source="t", question="q?", answers=["a"]), images=ImageStore())


def test_default_run_batch_answers_each_call_in_order_as_run_does() -> None:
    tool = Echo()
    calls = [({"word": w}, _ctx(f"s{i}")) for i, w in enumerate(["a", "b", "c"])]
    batch = asyncio.run(tool.run_batch(calls))
    singles = [asyncio.run(tool.run(args, ctx)) for args, ctx in calls]
    assert [o.text for o in batch] == [o.text for o in singles] == ["s0:a", "s1:b", "s2:c"]


def test_default_run_batch_returns_a_failed_call_as_its_exception_in_its_place() -> None:
    outputs = asyncio.run(Echo().run_batch([({"word": "a"}, _ctx("s0")), ({"word": "boom"}, _ctx("s1"))]))
    assert outputs[0].text == "s0:a"  # type: ignore[union-attr]
    assert isinstance(outputs[1], ValueError)
