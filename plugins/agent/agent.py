"""Running a tuned model as the agent it was trained to be.

* ``rr``: multi-turn. Each reply is parsed for ``<THOUGHT>``, ``<OPERATOR>``, ``<RAG>`` and
  ``<SIGNAL>``; the named operators and the RAG query run with the same tool and search plugins
  as ``mmat build``, and their results go back in the same user-turn templates the model was
  trained on. ``<SIGNAL>reflection</SIGNAL>`` gets the reflection turn; ``end`` (or the turn cap)
  gets the final question, whose reply is the answer.
* ``orr``: every enabled operator runs first; its outputs are appended to the question in the ORR
  layout; the model answers once with ``<THOUGHT>..</THOUGHT><ANSWER>The answer is: X</ANSWER>``.
* ``plain``: the question alone, one reply (a baseline for ``mmat eval``).

Operators the model was not trained with can be announced in the question (the paper's
zero-shot tool experiment): they are described in the first user turn and enabled for the run.

The result is the answer plus a full :class:`mmat_core.models.Trace`, the same record ``mmat
build`` writes, so the viewer and the exports read it too, and the list of model calls it made
(the agent's own and its tools', each with its token counts).

Generation settings (:class:`~mmat_plugins.agent.chat.GenerationSettings`) given to
:meth:`AgentRuntime.run_sample` apply to each of the agent's own model calls (every RR step, the
final answer, the ORR or plain answer); ``max_tokens`` is a cap per call, not for the whole run
(with ``max_tokens_scope="final_answer"`` it caps only the call whose reply is the answer).
Tools that call the model (``image_caption``) keep their own settings.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmat_plugins.agent.chat import (
    CALL_LOG,
    DEFAULT_SETTINGS,
    ChatModel,
    ChatModelClient,
    ChatReply,
    ChatTurn,
    GenerationSettings,
    finish_reason,
    respond,
)
from mmat_plugins.agent.parsing import clean_final_answer, parse_answer, parse_step

from mmat_core import formatting, prompts
from mmat_core.components import LLMClient, SearchBackend, Tool, ToolInfo
from mmat_core.engine.tools import ToolRunner
from mmat_core.errors import ConfigError
from mmat_core.images import ImageStore, image_ref_from_file
from mmat_core.models import ModelCall, Provenance, SourceSample, Step, Trace
from mmat_core.plugins import PluginManager, get_plugin_manager, mmat_version

Mode = Literal["rr", "orr", "plain"]
MODES: tuple[str, ...] = ("rr", "orr", "plain")
RUNTIME_VERSION = "runtime-1"
#: How new operators are announced to the model in the first user turn (project wording).
EXTRA_OPERATORS_NOTE = " You can also call these new operators with <OPERATOR>: {operators}."
DEFAULT_TOOLS = ("image_caption", "ocr", "face_detection")


@dataclass
class AgentResult:
    """What one run of the agent produced."""

    answer: str
    trace: Trace
    messages: list[ChatTurn] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    #: Every model call of the run in order (the agent's and its tools'), with its usage.
    calls: list[ModelCall] = field(default_factory=list)
    #: Why the call whose reply is the answer ended: ``stop`` (the model finished, or did not say)
    #: or ``length`` (cut at its token cap: the answer may be incomplete).
    finish_reason: str = "stop"


def announce(extra: Sequence[ToolInfo]) -> str:
    """The sentence that tells the model about operators it was not trained with."""
    if not extra:
        return ""
    return EXTRA_OPERATORS_NOTE.format(operators="; ".join(f"{t.name} ({t.description})" for t in extra))


class AgentRuntime:
    """Runs a chat model with tools, multi-turn (RR), one-turn with tool outputs (ORR) or plain."""

    def __init__(
        self,
        model: ChatModel,
        tools: Sequence[Tool] = (),
        search: SearchBackend | None = None,
        *,
        mode: Mode = "rr",
        max_turns: int = 8,
        rag_top_k: int = 3,
        tool_llm: LLMClient | None = None,
        extra_tools: Sequence[Tool] = (),
        tool_cache: Any = None,
    ) -> None:
        """``tool_cache``: where tool results are kept between questions (an object with the
        ``get``/``put`` of :class:`mmat_core.engine.cache.Cache`, e.g. ``mmat serve``'s in-memory
        :class:`~mmat_plugins.agent.toolcache.ToolResultCache`); none by default."""
        if mode not in MODES:
            raise ConfigError(f"unknown mode '{mode}'; allowed: {', '.join(MODES)}", key="mode")
        if max_turns < 1:
            raise ConfigError("max_turns must be at least 1", key="max_turns")
        self.model = model
        self._settings: contextvars.ContextVar[GenerationSettings] = contextvars.ContextVar(
            "mmat_agent_settings", default=DEFAULT_SETTINGS)
        self.mode = mode
        self.max_turns = max_turns
        self.rag_top_k = rag_top_k
        self.search = search
        self.tools = list(tools)
        self.extra_tools = [t for t in extra_tools if t.name not in {tool.name for tool in self.tools}]
        # image_caption asks a VLM: by default the tuned model itself, as it can see the image.
        self.runner = ToolRunner(self.tools + self.extra_tools, ImageStore(None), llm=tool_llm or ChatModelClient(model),
                                 search=search, cache=tool_cache)

    @classmethod
    def from_names(
        cls,
        model: ChatModel,
        tools: Sequence[str] = DEFAULT_TOOLS,
        search: str | dict[str, Any] | None = None,
        *,
        extra_operators: Sequence[str] = (),
        plugins: PluginManager | None = None,
        **settings: Any,
    ) -> AgentRuntime:
        """Build a runtime from plugin names: ``tools=["ocr"], search={"name": "local", "corpus": ...}``."""
        manager = plugins or get_plugin_manager()
        made_tools = [manager.create("tool", name) for name in tools]
        extra = [manager.create("tool", name) for name in extra_operators]
        backend = None
        if search:
            spec = {"name": search} if isinstance(search, str) else dict(search)
            backend = manager.create("search", spec.pop("name"), **spec)
        return cls(model, made_tools, backend, extra_tools=extra, **settings)  # type: ignore[arg-type]

    def infos(self, tools: Sequence[Tool]) -> list[ToolInfo]:
        """What prompts need of the given tools."""
        return [ToolInfo(name=t.name, label=t.result_label(), description=t.description) for t in tools]

    def _trace(self, sample: SourceSample) -> Trace:
        provenance = Provenance(
            mmat_version=mmat_version(),
            generator=f"runtime:{self.model.name}",
            offline=False,
            prompt_versions={"runtime": RUNTIME_VERSION, "rr_system": prompts.RR_SYSTEM_VERSION,
                             "orr_system": prompts.ORR_SYSTEM_VERSION},
            tool_versions={t.name: t.version for t in self.tools + self.extra_tools},
            source=sample.source,
            subset=sample.subset,
            licence=sample.licence,
        )
        return Trace(id=sample.id, sample=sample, tools=[t.name for t in self.tools + self.extra_tools], provenance=provenance)

    @staticmethod
    def make_sample(image: Path | Sequence[Path] | None, question: str, *, constraint: str = "",
                    answers: Sequence[str] | None = None, sample_id: str = "query", source: str = "runtime",
                    **fields: Any) -> SourceSample:
        """A SourceSample for a question at run time (the answer is unknown unless given)."""
        paths = [] if image is None else ([Path(image)] if isinstance(image, (str, Path)) else [Path(p) for p in image])
        refs = []
        for path in paths:
            if not path.exists():
                raise ConfigError(f"image not found: {path}", key="image")
            refs.append(image_ref_from_file(path))
        # The same separator the sources use, so the model sees the first turn it was trained on.
        constraint = prompts.constraint_suffix(constraint)
        return SourceSample(id=sample_id, source=source, question=question, answers=list(answers or [""]),
                            constraint=constraint, images=refs, meta={"answer_known": bool(answers)}, **fields)

    async def _ask(self, messages: list[ChatTurn], images: list[Path], purpose: str, trace: Trace) -> tuple[ChatReply, ModelCall]:
        settings = self._settings.get()
        if purpose == "rr_step" and settings.max_tokens_scope == "final_answer":
            settings = dataclasses.replace(settings, max_tokens=None)
        reply, call = await respond(self.model, messages, images, settings, purpose=purpose)
        trace.usage.add(call.usage)
        return reply, call

    @staticmethod
    def _answered(result: AgentResult, reply: ChatReply) -> AgentResult:
        """``result`` with the finish reason of the answer's call; a cut answer is noted on the trace."""
        result.finish_reason = finish_reason(reply)
        if result.finish_reason == "length":
            result.trace.notes.append("answer_cut_at_max_tokens: the answer's call hit its token cap")
        return result

    async def run_sample(self, sample: SourceSample, settings: GenerationSettings | None = None) -> AgentResult:
        """Answer one sample in the runtime's mode and return the answer with its trace.

        ``settings`` apply to each of the agent's own model calls (``max_tokens`` per call).
        Cancelling the task stops the run at its next await (no further model call or tool run).
        """
        trace = self._trace(sample)
        images = [Path(ref.path) for ref in sample.images if ref.path]
        started = time.monotonic()
        calls: list[ModelCall] = []
        # Context variables, not attributes: one runtime answers many questions at once.
        settings_token = self._settings.set(settings or DEFAULT_SETTINGS)
        calls_token = CALL_LOG.set(calls)
        try:
            if self.mode == "rr":
                result = await self._run_rr(sample, trace, images)
            elif self.mode == "orr":
                result = await self._run_orr(sample, trace, images)
            else:
                result = await self._run_plain(sample, trace, images)
        except Exception as exc:  # noqa: BLE001 - one failed question is recorded on its trace; the caller goes on
            trace.status = "failed"
            trace.failure = f"{type(exc).__name__}: {exc}"
            result = AgentResult(answer="", trace=trace)
        finally:
            CALL_LOG.reset(calls_token)
            self._settings.reset(settings_token)
        result.calls = calls
        trace.timings["runtime_s"] = time.monotonic() - started
        return result

    async def arun(self, image: Path | Sequence[Path] | None, question: str, *, constraint: str = "",
                   answers: Sequence[str] | None = None, sample_id: str = "query",
                   settings: GenerationSettings | None = None) -> AgentResult:
        """Answer ``question`` about ``image``."""
        return await self.run_sample(self.make_sample(image, question, constraint=constraint, answers=answers,
                                                      sample_id=sample_id), settings)

    def run(self, image: Path | Sequence[Path] | None, question: str, **kwargs: Any) -> AgentResult:
        """Blocking form of :meth:`arun` (closes the model's connections afterwards)."""

        async def once() -> AgentResult:
            try:
                return await self.arun(image, question, **kwargs)
            finally:
                await self.aclose()

        return asyncio.run(once())

    # -- modes ------------------------------------------------------------------------------

    async def _run_rr(self, sample: SourceSample, trace: Trace, images: list[Path]) -> AgentResult:
        system = formatting.rr_system_prompt(self.infos(self.tools), self.search is not None)
        note = announce(self.infos(self.extra_tools))
        messages: list[ChatTurn] = [
            {"role": "system", "content": system},
            {"role": "user", "content": prompts.first_turn(sample.question, sample.constraint + note)},
        ]
        replies: list[str] = []
        ctx = self.runner.context(sample, {})
        for turn in range(self.max_turns):
            step_reply, call = await self._ask(messages, images, "rr_step", trace)
            reply = step_reply.text
            replies.append(reply)
            parsed = parse_step(reply)
            trace.notes.extend(f"turn {turn + 1}: {repair}" for repair in parsed.repairs)
            step = Step(kind="reflection" if parsed.signal == "reflection" else "rationale", thought=parsed.thought,
                        operators=parsed.operators, rag_query=parsed.rag_query, signal=parsed.signal, model_call=call)
            trace.steps.append(step)
            messages.append({"role": "assistant", "content": reply})
            if parsed.signal == "end":
                break
            if turn == self.max_turns - 1:
                # Turn cap: what this step asked for could never be read, so it is not run, and the
                # final question follows the model's turn directly (no two user turns in a row).
                trace.notes.append("turn_cap_reached")
                step.signal = "end"
                break
            await self._act(step, ctx, trace)
            messages.append({"role": "user", "content": step.observation})
        trace.final_prompt = prompts.final_turn(sample.question)
        messages.append({"role": "user", "content": trace.final_prompt})
        answer, trace.final_call = await self._ask(messages, images, "final_answer", trace)
        replies.append(answer.text)
        messages.append({"role": "assistant", "content": answer.text})
        trace.final_answer = clean_final_answer(answer.text)
        return self._answered(AgentResult(answer=trace.final_answer, trace=trace, messages=messages, replies=replies),
                              answer)

    async def _act(self, step: Step, ctx: Any, trace: Trace) -> None:
        """Run the step's operators and RAG query; the observation uses the training templates."""
        observed = await self.runner.act(step, [(name, {}) for name in step.operators], step.rag_query,
                                         self.rag_top_k, ctx, trace.usage)
        if step.signal == "reflection" and not observed:
            step.observation = prompts.REFLECTION_TURN
        else:
            step.observation = prompts.observation(observed)

    async def _run_orr(self, sample: SourceSample, trace: Trace, images: list[Path]) -> AgentResult:
        ctx = self.runner.context(sample, {})
        names = [t.name for t in self.tools + self.extra_tools]
        calls = await self.runner.call_many([(name, {}) for name in names], ctx)
        for call in calls:
            trace.usage.add(call.usage)
        # The ORR question is computed from a trace by the same helper that wrote the training data.
        step = Step(thought="", operators=names, tool_calls=calls, signal="end")
        trace.steps.append(step)
        question = formatting.orr_question(trace)
        messages: list[ChatTurn] = [
            {"role": "system", "content": prompts.orr_system()},
            {"role": "user", "content": question + announce(self.infos(self.extra_tools))},
        ]
        answer, call = await self._ask(messages, images, "orr_answer", trace)
        reply = answer.text
        parsed = parse_answer(reply)
        if parsed.format == "bare":
            trace.notes.append("orr: no <ANSWER> tag; the whole reply was taken as the answer")
        step.thought = parsed.thought
        step.model_call = call
        trace.final_answer = parsed.answer
        messages.append({"role": "assistant", "content": reply})
        return self._answered(AgentResult(answer=parsed.answer, trace=trace, messages=messages, replies=[reply]), answer)

    async def _run_plain(self, sample: SourceSample, trace: Trace, images: list[Path]) -> AgentResult:
        messages: list[ChatTurn] = [{"role": "user", "content": f"{sample.question}{sample.constraint}".strip()}]
        answer, call = await self._ask(messages, images, "plain_answer", trace)
        trace.final_call = call
        trace.final_answer = clean_final_answer(answer.text)
        messages.append({"role": "assistant", "content": answer.text})
        return self._answered(AgentResult(answer=trace.final_answer, trace=trace, messages=messages,
                                          replies=[answer.text]), answer)

    async def aclose(self) -> None:
        """Close the model, the search backend and the tool pool."""
        await self.model.aclose()
        if self.search is not None:
            await self.search.aclose()
        self.runner.close()
