"""Stage 2: the rationale loop.

The generator sees the image, the question and the known answer. Each turn it replies with one
JSON step (``thought / operators / rag / next_action``). A reply that is not a valid step is
repaired by a bounded re-ask (the failed exchange never enters the dialogue); when the re-asks
run out the sample is recorded as failed. The engine runs the chosen operators and the RAG query
concurrently, answers with the exact user-turn templates, and loops until ``final_answer`` or the
turn cap. The last turn asks for the bare answer: with ``final_answer: label`` (the default, the
paper) the dataset's label is that answer and no model call is made; with ``final_answer: model``
the generator writes it. Every step, call, result, timing and token count lands in the Trace.

Text is checked before it enters the Trace (docs/formats.md, "Text that cannot forge the
format"): model text (thoughts, RAG queries, a model-written answer) that holds a format tag or a
control character, or runs past its length cap, is refused and re-asked like a malformed step;
dataset text (question, constraint, label) that holds a tag, or a question past its cap, fails
the sample before any model call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from mmat_core import prompts
from mmat_core.components import ContentPart, LLMClient, LLMRequest, Message, SearchBackend, ToolContext
from mmat_core.construct import construct
from mmat_core.engine.settings import EngineSettings
from mmat_core.engine.errors import LLMCallError
from mmat_core.errors import MmatError
from mmat_core.engine.schemacheck import schema_errors
from mmat_core.engine.tools import RESULT_TOO_LONG, ToolRunner
from mmat_core.formatting import find_format_tag
from mmat_core.models import ModelCall, SourceSample, Step, Trace
from mmat_core.replies import ReplyJSONError, extract_json_object
from mmat_core.text_checks import find_control_character

_LEAK_PHRASES = re.compile(
    r"\b(known|given|provided|expected|ground[- ]truth|correct|target|reference)\s+(answer|label|solution)\b"
    r"|\b(answer|label)\s+(is\s+)?(given|provided|known)\b",
    re.IGNORECASE,
)


#: A surrogate code point alone in a str: what a JSON escape like \ud83d without its pair decodes to.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class StepParseError(MmatError, ValueError):
    """A reply that is not a valid step; the message is what the repair prompt tells the model.

    ``reason`` is what the failure counts as when the re-asks run out: ``malformed_step`` for a
    reply that is not step JSON, else the text check that refused it (``forged_tag``,
    ``control_characters``, ``thought_too_long``, ...), which then also leads the message.
    """

    def __init__(self, message: str, reason: str = "malformed_step") -> None:
        super().__init__(message if reason == "malformed_step" else f"{reason}: {message}")
        self.reason = reason


_ENGINE_DEFAULTS = EngineSettings()


@dataclass(frozen=True)
class TextLimits:
    """Length caps in characters (``engine.max_*_chars``); each overflow is a counted reason."""

    thought: int = _ENGINE_DEFAULTS.max_thought_chars
    rag_query: int = _ENGINE_DEFAULTS.max_rag_query_chars
    question: int = _ENGINE_DEFAULTS.max_question_chars
    tool_result: int = _ENGINE_DEFAULTS.max_tool_result_chars

    @classmethod
    def from_engine(cls, engine: EngineSettings) -> TextLimits:
        """The caps of the ``engine`` section of a config."""
        return cls(thought=engine.max_thought_chars, rag_query=engine.max_rag_query_chars,
                   question=engine.max_question_chars, tool_result=engine.max_tool_result_chars)


def check_model_text(text: str, where: str, max_chars: int) -> None:
    """Refuse model text that cannot go into the training data as it is: longer than
    ``max_chars`` (``{where}_too_long``), holding a tag of the RR/ORR format (``forged_tag``), a
    control character (``control_characters``, the check questions get in curation) or a lone
    surrogate (``invalid_text``: no UTF-8 file or store can hold it). Raises
    :class:`StepParseError` whose message tells the model what to change."""
    if len(text) > max_chars:
        raise StepParseError(f"the {where.replace('_', ' ')} has {len(text)} characters; at most {max_chars} are "
                             "allowed, so write it shorter", f"{where}_too_long")
    tag = find_format_tag(text)
    if tag is not None:
        raise StepParseError(f"the {where.replace('_', ' ')} holds {tag!r}; write plain text without any tag, "
                             "the format's tags are added for you", "forged_tag")
    bad = find_control_character(text)
    if bad is not None:
        raise StepParseError(f"the {where.replace('_', ' ')} holds the control character U+{ord(bad.group()):04X} "
                             f"at {bad.start()}; write plain text", "control_characters")
    if not text.isascii():
        lone = _LONE_SURROGATE.search(text)
        if lone is not None:
            # Half of a character (a reply whose JSON escapes a lone \ud83d): UTF-8, and so the
            # run store and every output file, cannot hold it.
            raise StepParseError(f"the {where.replace('_', ' ')} holds half a character (U+{ord(lone.group()):04X} "
                                 f"at {lone.start()}); write whole characters", "invalid_text")


def sample_text_problem(sample: SourceSample, limits: TextLimits) -> str | None:
    """Why a sample's own text cannot become training data (a failure string), or None.

    Dataset text cannot be re-asked: a question past its cap, or a question, constraint or label
    that holds a format tag, fails the sample before any model call is paid for."""
    if len(sample.question) > limits.question:
        return f"question_too_long: the question has {len(sample.question)} characters (limit {limits.question})"
    for where, text in (("question", sample.question), ("constraint", sample.constraint), ("label", sample.answer)):
        tag = find_format_tag(text)
        if tag is not None:
            return f"forged_tag: the {where} holds {tag!r}"
    return None


@dataclass
class ParsedStep:
    """A validated step: operators resolved to (name, args) pairs, the RAG query cleaned."""

    thought: str
    operators: list[tuple[str, dict[str, Any]]]
    rag_query: str | None
    final: bool


def parse_step(text: str) -> dict[str, Any]:
    """Parse and schema-check one step reply; raise StepParseError with a reason the model can act on.

    A Markdown code fence around the object is tolerated; missing ``operators`` and ``rag`` are
    read as "none".
    """
    try:
        data = extract_json_object(text)
    except ReplyJSONError as exc:
        raise StepParseError(str(exc)) from None
    data.setdefault("operators", [])
    data.setdefault("rag", {"needed": False, "query": None})
    errors = schema_errors(prompts.STEP_SCHEMA, data)
    if errors:
        error = min(errors, key=lambda e: len(list(e.path)))
        where = "/".join(map(str, error.path)) or "(root)"
        raise StepParseError(f"{where}: {error.message}")
    return data


def check_step(data: dict[str, Any], enabled: Collection[str], rag_enabled: bool,
               limits: TextLimits | None = None) -> ParsedStep:
    """Check a schema-valid step against the run: operators must be enabled, a RAG request needs
    a query and a search backend, the thought and query pass :func:`check_model_text`. Raise
    StepParseError naming what is allowed."""
    limits = limits or TextLimits()
    final = data["next_action"] == "final_answer"
    check_model_text(data["thought"], "thought", limits.thought)
    operators: list[tuple[str, dict[str, Any]]] = []
    for index, item in enumerate(data["operators"]):
        name, args = (item, {}) if isinstance(item, str) else (item["name"], item.get("args") or {})
        name = name.strip()
        if name not in enabled:
            allowed = ", ".join(enabled) or "(none: leave the list empty)"
            raise StepParseError(f"operators/{index}: '{name}' is not an operator of this run; allowed: {allowed}")
        if name not in (n for n, _ in operators):
            operators.append((name, args))
    rag = data["rag"]
    query = (rag.get("query") or "").strip() if rag.get("needed") else ""
    if rag.get("needed") and not final:
        if not rag_enabled:
            raise StepParseError('rag: web search is not available in this run; set "needed" to false')
        if not query:
            raise StepParseError('rag/query: a search needs a non-empty query (or set "needed" to false)')
        check_model_text(query, "rag_query", limits.rag_query)
    if final:
        # The last step closes the reasoning: nothing it asks for would ever be read.
        return ParsedStep(thought=data["thought"], operators=[], rag_query=None, final=True)
    return ParsedStep(thought=data["thought"], operators=operators, rag_query=query or None, final=False)


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).strip()


def leaks_answer(thought: str, answer: str, *, first_step: bool) -> bool:
    """Whether a thought leans on the known answer: it mentions a 'known/given answer', or the
    first step states a distinctive answer (three characters or more) before any evidence came back."""
    # Every leak phrase holds "answer", "label" or "solution": an ASCII thought without them needs
    # no regex search (non-ASCII text always gets one: case-insensitive matching there is wider).
    lowered = thought.lower()
    if not thought.isascii() or "answer" in lowered or "label" in lowered or "solution" in lowered:
        if _LEAK_PHRASES.search(thought):
            return True
    normalised = _norm(answer)
    if first_step and len(normalised) >= 3:
        return f" {normalised} " in f" {_norm(thought)} "
    return False


def _reask_messages(trace: Trace, what: str, attempt: int, error: StepParseError, messages: list[Message],
                    reply: str, repair_prompt: str) -> list[Message]:
    """Note a refused reply in the trace (``step_repair: <what> attempt N: <error>``) and return the
    conversation that asks again: ``messages``, the refused reply, then ``repair_prompt`` naming the error."""
    trace.notes.append(f"step_repair: {what} attempt {attempt + 1}: {error}")
    return [*messages, Message(role="assistant", content=reply),
            Message(role="user", content=repair_prompt.format(error=error))]


@dataclass
class LoopSettings:
    """Settings of the loop (from the ``engine`` section of the config)."""

    max_turns: int = 8
    repair_attempts: int = 2
    rag_top_k: int = 3
    temperature: float | None = None
    max_tokens: int | None = 1024
    #: label: the final turn is the dataset's label, no model call (the paper); model: the generator's.
    final_answer: Literal["label", "model"] = "label"
    limits: TextLimits = field(default_factory=TextLimits)

    @classmethod
    def from_engine(cls, engine: EngineSettings) -> LoopSettings:
        """The loop settings of the ``engine`` section of a config."""
        return cls(max_turns=engine.max_turns, repair_attempts=engine.repair_attempts, rag_top_k=engine.rag_top_k,
                   temperature=engine.temperature, max_tokens=engine.max_tokens, final_answer=engine.final_answer,
                   limits=TextLimits.from_engine(engine))


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
        if search is not None:
            tools.search = search
        self.search = tools.search
        self.settings = settings
        tools.max_result_chars = settings.limits.tool_result
        self.tool_infos = tools.infos()

    def _request(self, purpose: str, messages: list[Message], sample: SourceSample, context: dict[str, Any],
                 schema: dict[str, Any] | None) -> LLMRequest:
        # Built without validation: every value here is already of its field's type (validating
        # copied the whole dialogue on every turn). The message list is copied as validation did,
        # since the loop goes on appending to its own.
        return construct(
            LLMRequest,
            purpose=purpose,
            messages=list(messages),
            prompt_version=prompts.GENERATOR_PROMPT_VERSION,
            temperature=None if self.settings.temperature is None else float(self.settings.temperature),
            max_tokens=None if self.settings.max_tokens is None else int(self.settings.max_tokens),
            response_schema=schema,
            sample_id=sample.id,
            context=dict(context),
        )

    def system_prompt(self, sample: SourceSample) -> str:
        """The generator's system prompt for ``sample``, listing the run's enabled operators."""
        return prompts.generator_system(sample.answer, self.tool_infos, rag_enabled=self.search is not None,
                                        arguments=self.tools.argument_hints())

    async def run(self, trace: Trace) -> Trace:
        """Generate the rationale into ``trace`` (steps, final answer, usage, timings, notes)."""
        sample = trace.sample
        started = time.monotonic()
        first = prompts.first_turn(sample.question, sample.constraint)
        parts = [ContentPart(type="image", image=image) for image in sample.images]
        parts.append(ContentPart(type="text", text=first))
        messages = [Message(role="system", content=self.system_prompt(sample)), Message(role="user", content=parts)]
        ctx = self.tools.context(sample, {})
        history: list[dict[str, Any]] = []
        context_base = {
            "question": sample.question,
            "answer": sample.answer,
            "choices": sample.choices,
            "task_type": sample.task_type,
            "tools": [t.name for t in self.tool_infos],
            "rag": self.search is not None,
        }
        trace.timings.setdefault("tools_s", 0.0)
        problem = sample_text_problem(sample, self.settings.limits)
        if problem is not None:
            trace.status, trace.failure = "failed", problem
            return trace
        try:
            for turn in range(self.settings.max_turns):
                context = {**context_base, "turn": turn, "history": history}
                parsed, raw, call, error = await self._ask_step(messages, sample, context, trace, turn)
                if parsed is None:
                    trace.status = "failed"
                    trace.failure = "malformed_step" if error is None or error.reason == "malformed_step" else str(error)
                    return trace
                # Built without validation: every value is of its field's type by construction.
                step = construct(
                    Step,
                    thought=parsed.thought,
                    operators=[name for name, _ in parsed.operators],
                    rag_query=parsed.rag_query,
                    signal="end" if parsed.final else "continue",
                    leaks_answer=leaks_answer(parsed.thought, sample.answer, first_step=turn == 0),
                    model_call=call,
                )
                if step.leaks_answer:
                    trace.notes.append(f"answer_leak: step {turn + 1}")
                trace.steps.append(step)
                messages.append(Message(role="assistant", content=raw))
                if parsed.final:
                    break
                if turn == self.settings.max_turns - 1:
                    # Turn cap: the reasoning is closed here. What this step asked for is not run,
                    # since the next turn asks for the answer and its results would never be read.
                    dropped = step.operators + (["rag"] if step.rag_query else [])
                    step.operators, step.rag_query, step.signal = [], None, "end"
                    trace.notes.append("turn_cap_reached" + (f": not run: {', '.join(dropped)}" if dropped else ""))
                    break
                acted = time.monotonic()
                await self._act(step, parsed, ctx, trace)
                trace.timings["tools_s"] += time.monotonic() - acted
                for failed in [c.name for c in step.tool_calls if (c.error or "").startswith(RESULT_TOO_LONG)] + (
                        ["rag"] if step.rag and (step.rag.error or "").startswith(RESULT_TOO_LONG) else []):
                    trace.notes.append(f"{RESULT_TOO_LONG}: step {turn + 1} {failed}")
                history.append({"thought": step.thought,
                                "results": [(c.name, c.result) for c in step.tool_calls]
                                + ([("rag", step.rag.result)] if step.rag else [])})
                messages.append(Message(role="user", content=step.observation))
            question_turn = prompts.final_turn(sample.question)
            trace.final_prompt = question_turn
            messages.append(Message(role="user", content=question_turn))
            if self.settings.final_answer == "label":
                # The paper's data: the dataset's label is the final turn, and no model is asked for it.
                trace.final_answer = sample.answer
                return trace
            context = {**context_base, "turn": len(trace.steps), "history": history, "final": True}
            answer, error = await self._ask_final(messages, sample, context, trace)
            if answer is None:
                trace.status = "failed"
                trace.failure = str(error)
                return trace
            trace.final_answer = answer
        except LLMCallError as exc:
            trace.status = "failed"
            trace.failure = f"llm_error: {type(exc).__name__}: {exc}"
        finally:
            trace.timings["rationale_s"] = time.monotonic() - started
        return trace

    async def _ask_step(self, messages: list[Message], sample: SourceSample, context: dict[str, Any], trace: Trace,
                        turn: int) -> tuple[ParsedStep | None, str, ModelCall | None]:
        """Ask for one step, re-asking up to ``repair_attempts`` times when the reply is invalid.

        The repair exchange is sent only to get a valid step; the dialogue keeps the valid reply
        alone. Returns the step (None when the re-asks ran out), the reply's text, the last call
        and the last error.
        """
        attempt_messages = list(messages)
        call: ModelCall | None = None
        error: StepParseError | None = None
        enabled = list(self.tools.tools)
        for attempt in range(self.settings.repair_attempts + 1):
            request = self._request("rationale_step", attempt_messages, sample, {**context, "repair": attempt},
                                    prompts.STEP_SCHEMA)
            response, call = await self.client.complete(request)
            trace.usage.add(call.usage)
            try:
                parsed = check_step(parse_step(response.text), enabled, self.search is not None, self.settings.limits)
                return parsed, response.text, call, None
            except StepParseError as exc:
                error = exc
                attempt_messages = _reask_messages(trace, f"turn {turn + 1}", attempt, exc, attempt_messages,
                                                  response.text, prompts.REPAIR_PROMPT)
        return None, "", call, error

    async def _ask_final(self, messages: list[Message], sample: SourceSample, context: dict[str, Any],
                         trace: Trace) -> tuple[str | None, StepParseError | None]:
        """Ask the generator for the bare answer (``final_answer: model``), re-asking like a step
        when the reply is refused by :func:`check_model_text`. Returns (answer, None), or
        (None, the last error) when the re-asks ran out."""
        attempt_messages = list(messages)
        error: StepParseError | None = None
        for attempt in range(self.settings.repair_attempts + 1):
            # The first ask's context is the one earlier versions sent (its cache entries stay valid).
            request = self._request("final_answer", attempt_messages, sample,
                                    {**context, "repair": attempt} if attempt else context, None)
            response, call = await self.client.complete(request)
            trace.final_call = call
            trace.usage.add(call.usage)
            answer = response.text.strip()
            try:
                check_model_text(answer, "answer", self.settings.limits.thought)
                return answer, None
            except StepParseError as exc:
                error = exc
                attempt_messages = _reask_messages(trace, "final answer", attempt, exc, attempt_messages,
                                                  response.text, prompts.ANSWER_REPAIR_PROMPT)
        return None, error

    async def _act(self, step: Step, parsed: ParsedStep, ctx: ToolContext, trace: Trace) -> None:
        """Run the step's operators and RAG query concurrently; write the observation."""
        observed = await self.tools.act(step, parsed.operators, parsed.rag_query, self.settings.rag_top_k, ctx, trace.usage)
        step.observation = prompts.observation(observed)
