"""Running operators: argument validation, timeouts, caching, worker pool, errors as observations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mmat_core.components import LLMClient, Tool, ToolContext, ToolInfo
from mmat_core.engine.cache import Cache, key_of, tool_key_document
from mmat_core.errors import ToolArgumentError
from mmat_core.images import ImageStore
from mmat_core.models import SourceSample, ToolCall


def validate_args(tool: type[Tool] | Tool, args: Any) -> dict[str, Any]:
    """Check untrusted arguments against the tool's JSON Schema; raise ToolArgumentError."""
    import jsonschema

    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ToolArgumentError(f"arguments of {tool.name} must be an object, got {type(args).__name__}")
    validator = jsonschema.Draft202012Validator(tool.args_schema)
    errors = sorted(validator.iter_errors(args), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(map(str, first.path)) or "(root)"
        raise ToolArgumentError(f"invalid arguments for {tool.name} at {where}: {first.message}")
    return args


class ToolRunner:
    """Runs the enabled tools of a run for the rationale loop."""

    def __init__(
        self,
        tools: list[Tool],
        images: ImageStore,
        *,
        llm: LLMClient | None = None,
        cache: Cache | None = None,
        workers: int = 2,
    ) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.images = images
        self.llm = llm
        self.cache = cache
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmat-tool")
        self.errors: dict[str, int] = {}

    def infos(self) -> list[ToolInfo]:
        """Name, label and description of each enabled tool, in configuration order."""
        return [ToolInfo(name=t.name, label=t.result_label(), description=t.description) for t in self.tools.values()]

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def context(self, sample: SourceSample, scratch: dict[str, Any]) -> ToolContext:
        """The context tools get for one sample."""
        return ToolContext(sample=sample, images=self.images, llm=self.llm, scratch=scratch, run_blocking=self._blocking)

    async def call(self, name: str, args: Any, ctx: ToolContext) -> ToolCall:
        """Run one tool. Every failure becomes an error observation, never an exception."""
        started = time.monotonic()
        tool = self.tools.get(name)
        if tool is None:
            return self._error(name, "", {}, f"unknown operator '{name}'; enabled: {', '.join(self.tools)}", started)
        try:
            args = validate_args(tool, args)
        except ToolArgumentError as exc:
            return self._error(name, tool.version, {}, str(exc), started)
        image = ctx.image
        extra = getattr(tool, "cache_extra", lambda _ctx: None)(ctx)
        document = tool_key_document(tool.name, tool.version, image.sha256 if image else None, args, extra)
        key = key_of(document)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                if hit.get("scratch"):
                    ctx.scratch.update(hit["scratch"])
                return ToolCall(name=name, version=tool.version, args=args, result=hit["text"], data=hit.get("data"), cached=True)
        try:
            scratch_before = dict(ctx.scratch)
            output = await asyncio.wait_for(tool.run(args, ctx), timeout=tool.timeout_s)
        except asyncio.TimeoutError:
            return self._error(name, tool.version, args, f"timed out after {tool.timeout_s:g}s", started)
        except Exception as exc:  # a tool's failure is an observation, not a crash
            return self._error(name, tool.version, args, f"{type(exc).__name__}: {exc}", started)
        if self.cache is not None:
            scratch = {k: v for k, v in ctx.scratch.items() if scratch_before.get(k) != v}
            self.cache.put(
                key,
                {"text": output.text, "data": output.data, "scratch": scratch},
                kind="tool",
                document=document,
                purpose=name,
                sample_id=ctx.sample.id,
            )
        return ToolCall(
            name=name,
            version=tool.version,
            args=args,
            result=output.text,
            data=output.data,
            latency_s=time.monotonic() - started,
            usage=output.usage,
        )

    def _error(self, name: str, version: str, args: dict[str, Any], message: str, started: float) -> ToolCall:
        self.errors[name] = self.errors.get(name, 0) + 1
        return ToolCall(
            name=name,
            version=version,
            args=args,
            result=f"The {name} operator failed: {message}",
            error=message,
            latency_s=time.monotonic() - started,
        )

    def close(self) -> None:
        """Stop the worker pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)
