"""Running operators: argument validation, timeouts, caching, worker pool, errors as observations.

Arguments come from a model and are untrusted: they are validated against the tool's JSON Schema
and handed to ``Tool.run`` as plain data. Nothing is evaluated or passed to a shell.

Tool results are cached by (tool, version, image hash, arguments, options, tool-specific context
such as the question for ``image_caption``), so a rerun does not redo them. A failing, timing-out
or unknown tool becomes an error observation in the dialogue and a count in the run report.

Results are text from the world (an OCR of a slide can read ``<ANSWER>``): every result, RAG
and error texts included, has its RR/ORR format tags neutralised
(:func:`mmat_core.formatting.neutralise_tags`), and a result longer than ``max_result_chars``
(``engine.max_tool_result_chars``) becomes an error observation (``result_too_long``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mmat_core.components import LLMClient, SearchBackend, Tool, ToolContext, ToolInfo
from mmat_core.engine.cache import Cache, keyed, tool_key_document
from mmat_core.engine.schemacheck import schema_errors
from mmat_core.engine.settings import EngineSettings
from mmat_core.engine.timeouts import with_timeout
from mmat_core.errors import ToolArgumentError
from mmat_core.formatting import neutralise_tags
from mmat_core.images import ImageStore
from mmat_core.models import RagCall, SearchHit, SourceSample, Step, ToolCall, Usage
from mmat_core.prompts import RAG_LABEL


def validate_args(tool: type[Tool] | Tool, args: Any) -> dict[str, Any]:
    """Check untrusted arguments against the tool's JSON Schema; raise ToolArgumentError."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ToolArgumentError(f"arguments of {tool.name} must be an object, got {type(args).__name__}")
    errors = sorted(schema_errors(tool.args_schema, args), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(map(str, first.path)) or "(root)"
        raise ToolArgumentError(f"invalid arguments for {tool.name} at {where}: {first.message}")
    return args


def tool_timeout(tool: Tool) -> float:
    """The tool's timeout: its ``timeout_s`` option when it has one, else the class default."""
    return float(getattr(tool.options, "timeout_s", None) or tool.timeout_s)


def argument_hint(tool: Tool | type[Tool]) -> str:
    """A one-line description of a tool's arguments for the generator prompt ('' when it has none)."""
    properties = (tool.args_schema or {}).get("properties") or {}
    if not properties:
        return ""
    required = set((tool.args_schema or {}).get("required") or [])
    parts = []
    for name, spec in properties.items():
        kind = spec.get("type", "value")
        if kind == "array":
            kind = f"list of {spec.get('items', {}).get('type', 'value')}"
        text = spec.get("description", "")
        optional = "" if name in required else "optional "
        parts.append(f"{name} ({optional}{kind}{': ' + text if text else ''})")
    return "; ".join(parts)


def _runs_after(tool: Tool | None) -> set[str]:
    """The tools ``tool`` waits for (none for a name that is not an enabled tool)."""
    return set(tool.runs_after) if tool is not None else set()


def plan_batches(names: Sequence[str], tools: dict[str, Tool]) -> list[list[str]]:
    """Group a step's operators into batches that may run concurrently.

    A tool that declares ``runs_after = ("image_caption",)`` waits for those tools when they are
    chosen in the same step (``label_bbox`` needs the scene graph ``image_caption`` produces);
    every other operator runs at once.
    """
    remaining = list(dict.fromkeys(names))
    batches: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        ready = [n for n in remaining if not (_runs_after(tools.get(n)) & (set(remaining) - {n}) - done)]
        if not ready:  # a cycle between third-party tools: run the rest together rather than hang
            ready = list(remaining)
        batches.append(ready)
        done.update(ready)
        remaining = [n for n in remaining if n not in ready]
    return batches


@dataclass
class ToolStats:
    """Per-tool counters for the run report."""

    calls: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def count(self, table: dict[str, Any], name: str, amount: float = 1) -> None:
        """Add ``amount`` to ``table[name]``."""
        table[name] = table.get(name, 0) + amount


def format_hits(hits: Sequence[SearchHit]) -> str:
    """The RAG result text that goes into the user turn: numbered snippets, titles first."""
    if not hits:
        return "No results were found."
    return " ".join(f"[{i}] {h.title + ': ' if h.title else ''}{h.snippet}" for i, h in enumerate(hits, 1))


FAILURE_PREFIX = "The {name} operator failed: "
#: The error (and trace note) of a result over ``max_result_chars``.
RESULT_TOO_LONG = "result_too_long"
DEFAULT_MAX_RESULT_CHARS = EngineSettings().max_tool_result_chars


def failure_text(name: str, message: str) -> str:
    """The observation a failed operator leaves in the dialogue (the importer recognises it)."""
    return FAILURE_PREFIX.format(name=name) + message


class ToolRunner:
    """Runs the enabled tools (and the RAG backend) of a run for the rationale loop."""

    def __init__(
        self,
        tools: list[Tool],
        images: ImageStore,
        *,
        llm: LLMClient | None = None,
        cache: Cache | None = None,
        workers: int = 2,
        search: SearchBackend | None = None,
        max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
    ) -> None:
        self.tools = {tool.name: tool for tool in tools}
        #: Longer results become ``result_too_long`` errors (the rationale loop sets it from its settings).
        self.max_result_chars = max_result_chars
        self.images = images
        self.llm = llm
        self.cache = cache
        self.search = search
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmat-tool")
        self.stats = ToolStats()
        #: Errors by tool name (``rag`` for retrieval); goes into run.json as ``tool_errors``.
        self.errors = self.stats.errors
        for tool in tools:
            # Here, in one thread, before any worker runs: some native libraries (OpenCV) are not
            # safe to import from two threads at once.
            tool.prepare()

    def infos(self) -> list[ToolInfo]:
        """Name, label and description of each enabled tool, in configuration order."""
        return [ToolInfo(name=t.name, label=t.result_label(), description=t.description) for t in self.tools.values()]

    def argument_hints(self) -> dict[str, str]:
        """Tool name -> argument hint, for the tools that take arguments."""
        return {name: hint for name, tool in self.tools.items() if (hint := argument_hint(tool))}

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def context(self, sample: SourceSample, scratch: dict[str, Any]) -> ToolContext:
        """The context tools get for one sample."""
        return ToolContext(sample=sample, images=self.images, llm=self.llm, scratch=scratch, run_blocking=self._blocking)

    def _key_document(self, tool: Tool, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        image = ctx.image
        # Options change results (OCR's max_side, a detector's model), the timeout does not.
        options = tool.options.model_dump(mode="json", exclude={"timeout_s"})
        extra = {"options": options, "context": tool.cache_extra(ctx)}
        return tool_key_document(tool.name, tool.version, image.sha256 if image else None, args, extra)

    def _finish(self, call: ToolCall) -> ToolCall:
        """A call's result as it may enter the dialogue: tags neutralised, length capped."""
        if call.error is None and len(call.result) > self.max_result_chars:
            self.stats.count(self.errors, call.name)
            message = f"{RESULT_TOO_LONG}: {len(call.result)} characters (limit {self.max_result_chars})"
            call.error, call.result, call.data = message, failure_text(call.name, message), None
        call.result = neutralise_tags(call.result)
        return call

    async def call(self, name: str, args: Any, ctx: ToolContext) -> ToolCall:
        """Run one tool. Every failure becomes an error observation, never an exception."""
        return self._finish(await self._call(name, args, ctx))

    async def _call(self, name: str, args: Any, ctx: ToolContext) -> ToolCall:
        started = time.monotonic()
        tool = self.tools.get(name)
        if tool is None:
            return self._error(name, "", {}, f"unknown operator '{name}'; enabled: {', '.join(self.tools) or '(none)'}", started)
        try:
            args = validate_args(tool, args)
        except ToolArgumentError as exc:
            return self._error(name, tool.version, {}, str(exc), started)
        key, document = keyed(self._key_document(tool, args, ctx))
        self.stats.count(self.stats.calls, name)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                if hit.get("scratch"):
                    ctx.scratch.update(hit["scratch"])
                self.stats.count(self.stats.cached, name)
                return ToolCall(name=name, version=tool.version, args=args, result=hit["text"], data=hit.get("data"),
                                cached=True, latency_s=time.monotonic() - started)
        timeout = tool_timeout(tool)
        scratch_before = dict(ctx.scratch)
        try:
            # In this task (asyncio.wait_for made a task per call before Python 3.12).
            output = await with_timeout(tool.run(args, ctx), timeout)
        except asyncio.TimeoutError:
            return self._error(name, tool.version, args, f"timed out after {timeout:g}s", started)
        except Exception as exc:  # a tool's failure is an observation, not a crash
            return self._error(name, tool.version, args, f"{type(exc).__name__}: {exc}", started)
        elapsed = time.monotonic() - started
        self.stats.count(self.stats.seconds, name, elapsed)
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
        return ToolCall(name=name, version=tool.version, args=args, result=output.text, data=output.data,
                        latency_s=elapsed, usage=output.usage)

    async def call_many(self, requests: Sequence[tuple[str, dict[str, Any]]], ctx: ToolContext) -> list[ToolCall]:
        """Run a step's operators: independent ones concurrently, dependent ones after what they
        need. Results come back in the order the operators were chosen."""
        by_name = {name: args for name, args in requests}
        results: dict[str, ToolCall] = {}
        for batch in plan_batches([name for name, _ in requests], self.tools):
            if len(batch) == 1:  # the usual case: no task (and gather) for a single call
                call = await self.call(batch[0], by_name[batch[0]], ctx)
                results[call.name] = call
                continue
            for call in await asyncio.gather(*(self.call(name, by_name[name], ctx) for name in batch)):
                results[call.name] = call
        return [results[name] for name in dict.fromkeys(name for name, _ in requests)]

    async def retrieve(self, query: str, k: int, sample_id: str | None = None) -> RagCall:
        """Run one RAG query, cached by (backend, version, options, query, k). Failures become
        an error observation; the result text is neutralised and capped like a tool's."""
        call = await self._retrieve(query, k, sample_id)
        if call.error is None and len(call.result) > self.max_result_chars:
            self.stats.count(self.errors, RAG_LABEL)
            call.error = f"{RESULT_TOO_LONG}: {len(call.result)} characters (limit {self.max_result_chars})"
            call.result = f"The rag search failed: {call.error}"
        call.result = neutralise_tags(call.result)
        return call

    async def _retrieve(self, query: str, k: int, sample_id: str | None = None) -> RagCall:
        started = time.monotonic()
        if self.search is None:
            return RagCall(query=query, result="No search backend is enabled in this run.", error="no_search_backend")
        backend = self.search
        self.stats.count(self.stats.calls, "rag")
        options = backend.options.model_dump(mode="json", exclude={"api_key"})
        document = {"kind": "rag", "backend": backend.name, "version": backend.version, "options": options,
                    "query": query, "k": k}
        key, document = keyed(document)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.count(self.stats.cached, "rag")
                return RagCall.model_validate({**hit, "cached": True, "latency_s": time.monotonic() - started})
        try:
            hits = await backend.search(query, k)
        except Exception as exc:  # a failed search is an observation, not a crash
            self.stats.count(self.errors, "rag")
            message = f"{type(exc).__name__}: {exc}"
            return RagCall(query=query, backend=backend.name, result=f"The rag search failed: {message}", error=message,
                           latency_s=time.monotonic() - started)
        call = RagCall(query=query, backend=backend.name, hits=list(hits)[:k], result=format_hits(list(hits)[:k]),
                       latency_s=time.monotonic() - started)
        self.stats.count(self.stats.seconds, "rag", call.latency_s)
        if self.cache is not None:
            self.cache.put(key, call.model_dump(mode="json", exclude={"cached", "latency_s"}), kind="rag",
                           document=document, purpose="rag", sample_id=sample_id)
        return call

    async def act(self, step: Step, requests: Sequence[tuple[str, dict[str, Any]]], rag_query: str | None,
                  rag_top_k: int, ctx: ToolContext, usage: Usage) -> list[tuple[str, str]]:
        """Run one step's operators and its RAG query concurrently, record them on ``step`` (and
        their model usage in ``usage``), and return the (label, result) pairs of the observation,
        in the order they were asked for."""
        tool_job = self.call_many(requests, ctx)
        if rag_query:
            calls, rag = await asyncio.gather(tool_job, self.retrieve(rag_query, rag_top_k, ctx.sample.id))
        else:
            calls, rag = await tool_job, None
        observed: list[tuple[str, str]] = []
        for call in calls:
            step.tool_calls.append(call)
            usage.add(call.usage)
            tool = self.tools.get(call.name)
            observed.append((tool.result_label() if tool else call.name, call.result))
        if rag is not None:
            step.rag = rag
            observed.append((RAG_LABEL, rag.result))
        return observed

    def _error(self, name: str, version: str, args: dict[str, Any], message: str, started: float) -> ToolCall:
        self.stats.count(self.errors, name)
        return ToolCall(
            name=name,
            version=version,
            args=args,
            result=failure_text(name, message),
            error=message,
            latency_s=time.monotonic() - started,
        )

    def close(self) -> None:
        """Stop the worker pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)
