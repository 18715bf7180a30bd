"""Stage 2: the rationale loop.

The generator sees the image, the question and the known answer. Each turn it replies with one
JSON step (``thought / operators / rag / next_action``); the engine runs the chosen operators and
the RAG query concurrently, answers with the exact user-turn templates, and loops until
``final_answer`` or the turn cap. A last turn asks for the bare answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from mmat_core import prompts
from mmat_core.components import ContentPart, LLMClient, LLMRequest, Message, SearchBackend
from mmat_core.engine.errors import LLMCallError
from mmat_core.engine.tools import ToolRunner
from mmat_core.models import ModelCall, RagCall, SourceSample, Step, ToolCall, Trace, Usage

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)
_LEAK_PHRASES = re.compile(
    r"\b(known|given|provided|expected|ground[- ]truth|correct|target)\s+(answer|label)\b", re.IGNORECASE
)


class StepParseError(ValueError):
    """A reply that is not a valid step."""


def parse_step(text: str) -> dict[str, Any]:
    """Parse and validate one step reply; raise StepParseError with a reason the model can act on."""
    import jsonschema

    body = _FENCE.sub("", text.strip()).strip()
    if not body:
        raise StepParseError("the reply was empty")
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise StepParseError("no JSON object found")
    try:
        data = json.loads(body[start : end + 1])
    except json.JSONDecodeError as exc:
        raise StepParseError(f"invalid JSON ({exc.msg} at position {exc.pos})") from None
    if isinstance(data, dict):
        data.setdefault("operators", [])
        data.setdefault("rag", {"needed": False, "query": None})
    errors = list(jsonschema.Draft202012Validator(prompts.STEP_SCHEMA).iter_errors(data))
    if errors:
        where = "/".join(map(str, errors[0].path)) or "(root)"
        raise StepParseError(f"{where}: {errors[0].message}")
    return data


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def leaks_answer(thought: str, answer: str, *, first_step: bool) -> bool:
    """Whether a thought leans on the known answer: it mentions a 'known/given answer', or the
    first step states a distinctive answer before any evidence came back."""
    if _LEAK_PHRASES.search(thought):
        return True
    normalised = _norm(answer)
    if first_step and len(normalised) >= 3:
        return f" {normalised} " in f" {_norm(thought)} "
    return False


@dataclass
class LoopSettings:
    """Settings of the loop (from the ``engine`` section of the config)."""

    max_turns: int = 8
    repair_attempts: int = 2
    rag_top_k: int = 3
    temperature: float | None = None
    max_tokens: int | None = 1024


class RationaleLoop:
    """Runs stage 2 for one sample at a time (many samples concurrently)."""

    def __init__(
        self,
        client: LLMClient,
        tools: ToolRunner,
        search: SearchBackend | None,
        settings: LoopSettings,
    ) -> None:
        self.client = client
        self.tools = tools
        self.search = search
        self.settings = settings
        self.tool_infos = tools.infos()
        self.rag_cache = tools.cache

    def _request(self, purpose: str, messages: list[Message], sample: SourceSample, context: dict[str, Any], schema: dict | None) -> LLMRequest:
        return LLMRequest(
            purpose=purpose,
            messages=messages,
            prompt_version=prompts.GENERATOR_PROMPT_VERSION,
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
            response_schema=schema,
            sample_id=sample.id,
            context=context,
        )

    async def run(self, trace: Trace) -> Trace:
        """Generate the rationale into ``trace`` (steps, final answer, usage)."""
        sample = trace.sample
        started = time.monotonic()
        system = prompts.generator_system(sample.answer, self.tool_infos)
        first = prompts.first_turn(sample.question, sample.constraint)
        parts = [ContentPart(type="image", image=image) for image in sample.images]
        parts.append(ContentPart(type="text", text=first))
        messages = [Message(role="system", content=system), Message(role="user", content=parts)]
        scratch: dict[str, Any] = {}
        ctx = self.tools.context(sample, scratch)
        history: list[dict[str, Any]] = []
        context_base = {
            "question": sample.question,
            "answer": sample.answer,
            "choices": sample.choices,
            "task_type": sample.task_type,
            "tools": [t.name for t in self.tool_infos],
            "rag": self.search is not None,
        }
        try:
            for turn in range(self.settings.max_turns):
                context = {**context_base, "turn": turn, "history": history}
                step_data, raw, call = await self._ask_step(messages, sample, context, trace)
                if step_data is None:
                    trace.status = "failed"
                    trace.failure = "malformed_step"
                    return trace
                final = step_data["next_action"] == "final_answer"
                rag_query = (step_data["rag"].get("query") or "").strip() if step_data["rag"].get("needed") else ""
                operators = [] if final else list(dict.fromkeys(step_data["operators"]))
                step = Step(
                    thought=step_data["thought"],
                    operators=operators,
                    rag_query=(rag_query or None) if not final else None,
                    signal="end" if final else "continue",
                    leaks_answer=leaks_answer(step_data["thought"], sample.answer, first_step=turn == 0),
                    model_call=call,
                )
                trace.steps.append(step)
                messages.append(Message(role="assistant", content=raw))
                if final:
                    break
                await self._act(step, ctx, trace.usage)
                history.append({"thought": step.thought, "results": [(c.name, c.result) for c in step.tool_calls]
                                + ([("rag", step.rag.result)] if step.rag else [])})
                messages.append(Message(role="user", content=step.observation))
                if turn == self.settings.max_turns - 1:
                    # Turn cap: close the reasoning here and ask for the answer.
                    step.signal = "end"
                    trace.notes.append("turn_cap_reached")
            question_turn = prompts.final_turn(sample.question)
            trace.final_prompt = question_turn
            messages.append(Message(role="user", content=question_turn))
            context = {**context_base, "turn": len(trace.steps), "history": history, "final": True}
            response, call = await self.client.complete(self._request("final_answer", messages, sample, context, None))
            trace.final_answer = response.text.strip()
            trace.final_call = call
            trace.usage.add(call.usage)
        except LLMCallError as exc:
            trace.status = "failed"
            trace.failure = f"llm_error: {type(exc).__name__}: {exc}"
        finally:
            trace.timings["rationale_s"] = time.monotonic() - started
        return trace

    async def _ask_step(self, messages: list[Message], sample: SourceSample, context: dict[str, Any], trace: Trace) -> tuple[dict[str, Any] | None, str, ModelCall | None]:
        """Ask for one step, re-asking up to ``repair_attempts`` times when the reply is invalid."""
        attempt_messages = list(messages)
        call: ModelCall | None = None
        for attempt in range(self.settings.repair_attempts + 1):
            request = self._request("rationale_step", attempt_messages, sample, {**context, "repair": attempt}, prompts.STEP_SCHEMA)
            response, call = await self.client.complete(request)
            trace.usage.add(call.usage)
            try:
                return parse_step(response.text), response.text, call
            except StepParseError as exc:
                trace.notes.append(f"step_repair: {exc}")
                attempt_messages = attempt_messages + [
                    Message(role="assistant", content=response.text),
                    Message(role="user", content=prompts.REPAIR_PROMPT.format(error=exc)),
                ]
        return None, "", call

    async def _act(self, step: Step, ctx: Any, usage: Usage) -> None:
        """Run the step's operators and RAG query concurrently; write the observation."""
        jobs: list[Any] = [self.tools.call(name, {}, ctx) for name in step.operators]
        if step.rag_query and self.search is not None:
            jobs.append(self._retrieve(step.rag_query, ctx.sample.id))
        results = await asyncio.gather(*jobs)
        observed: list[tuple[str, str]] = []
        for result in results:
            if isinstance(result, ToolCall):
                step.tool_calls.append(result)
                usage.add(result.usage)
                tool = self.tools.tools.get(result.name)
                observed.append((tool.result_label() if tool else result.name, result.result))
            else:
                step.rag = result
                observed.append((prompts.RAG_LABEL, result.result))
        step.observation = prompts.observation(observed)

    async def _retrieve(self, query: str, sample_id: str) -> RagCall:
        """Run one RAG query (cached by backend, query and k)."""
        from mmat_core.engine.cache import key_of

        assert self.search is not None
        started = time.monotonic()
        k = self.settings.rag_top_k
        document = {"kind": "rag", "backend": self.search.name, "version": self.search.version, "query": query, "k": k}
        key = key_of(document)
        if self.rag_cache is not None:
            hit = self.rag_cache.get(key)
            if hit is not None:
                return RagCall.model_validate({**hit, "cached": True})
        try:
            hits = await self.search.search(query, k)
        except Exception as exc:  # a failed search is an observation, not a crash
            self.tools.errors["rag"] = self.tools.errors.get("rag", 0) + 1
            return RagCall(query=query, backend=self.search.name, result=f"The search failed: {exc}", error=str(exc),
                           latency_s=time.monotonic() - started)
        text = " ".join(f"[{i}] {h.title + ': ' if h.title else ''}{h.snippet}" for i, h in enumerate(hits, 1)) or "No results were found."
        call = RagCall(query=query, backend=self.search.name, hits=hits, result=text, latency_s=time.monotonic() - started)
        if self.rag_cache is not None:
            self.rag_cache.put(key, call.model_dump(mode="json", exclude={"cached", "latency_s"}), kind="rag",
                               document=document, purpose="rag", sample_id=sample_id)
        return call

