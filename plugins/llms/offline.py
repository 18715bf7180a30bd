"""The ``offline`` backend: follows the MMAT step protocol deterministically, with no model.

It exists so the whole pipeline runs without an API key (the README's first command, tests,
benchmarks). It reads the structured ``context`` the engine attaches to each request, first calls
the operators that suit the question, then every other configured operator (third-party ones
included) in its second step, quotes their real outputs in its thoughts and ends with the known
answer. Its provenance says ``offline: true`` so nobody mistakes its text for model-written
data.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mmat_core.components import ComponentOptions, LLMBackend, LLMRequest, LLMResponse
from mmat_core.construct import construct
from mmat_core.images import ImageStore
from mmat_core.models import Usage

_TEXT_TASKS = {"docvqa", "document", "chart", "table", "ocr", "infographic", "math_table"}
_PEOPLE = re.compile(r"\b(face|faces|person|people|man|woman|men|women|boy|girl|astronaut|who)\b", re.I)
_WORD = re.compile(r"[A-Za-z][A-Za-z-]{3,}")
_STOP = {"what", "which", "where", "when", "does", "there", "this", "that", "with", "from", "many", "much",
         "image", "picture", "shown", "answer", "question", "following", "according", "value", "is", "the"}


def _tokens(text: str) -> int:
    """A cheap token estimate (about four characters a token)."""
    return max(1, len(text) // 4)


def _clip(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _nouns(question: str, limit: int = 4) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(question.lower()):
        if word not in _STOP and word not in seen:
            seen.append(word)
    return seen[:limit] or ["object"]


#: How every offline answer to a plain chat request begins, so nobody takes it for a model's.
OFFLINE_CHAT_LABEL = "[offline: no model was asked]"


def _schema_example(schema: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    """The smallest value of ``schema`` (a JSON Schema as pydantic writes them): the first enum
    value or const, empty-ish scalars (strings say ``offline``), every required property."""
    if not isinstance(schema, dict) or depth > 20:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _schema_example(defs.get(ref.rsplit("/", 1)[1]), defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return _schema_example(options[0], defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: _schema_example(properties.get(name, {}), defs, depth + 1)
                for name in schema.get("required", list(properties))}
    if kind == "array":
        count = int(schema.get("minItems", 0))
        return [_schema_example(schema.get("items", {}), defs, depth + 1) for _ in range(count)]
    if kind == "string":
        return "offline"
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        return int(low) + (1 if "exclusiveMinimum" in schema else 0) if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    return None


def chat_reply(request: LLMRequest) -> str:
    """The offline answer to a plain chat request (a ChatEngine row): a labelled echo of the last
    user message and its image count, or, with a ``response_schema``, the smallest JSON that
    matches it. Deterministic, so a rerun is answered from the cache."""
    if request.response_schema is not None:
        return json.dumps(_schema_example(request.response_schema, request.response_schema.get("$defs", {})),
                          ensure_ascii=False)
    last = next((m for m in reversed(request.messages) if m.role == "user"), None)
    question = _clip(last.text(), 160) if last is not None else ""
    images = sum(1 for p in last.content if p.type == "image") if last is not None and not isinstance(last.content, str) else 0
    seen = f" and {images} image{'s' if images != 1 else ''}" if images else ""
    return f'{OFFLINE_CHAT_LABEL} You asked: "{question}"{seen}.'


class OfflineOptions(ComponentOptions):
    """Options of the offline backend."""

    model: str = "offline-protocol-v1"


class OfflineBackend(LLMBackend):
    """Deterministic stand-in for a VLM that follows the MMAT step protocol."""

    name = "offline"
    version = "1"
    description = "deterministic protocol follower for runs without an API key (output marked offline)"
    offline = True
    Options = OfflineOptions

    async def complete(self, request: LLMRequest, images: ImageStore) -> LLMResponse:
        """Answer from the request's context; no network, no model."""
        if request.purpose == "chat":  # a ChatEngine row: no step protocol, no context
            text = chat_reply(request)
        else:
            handler = getattr(self, f"_{request.purpose}", None)
            text = handler(request.context) if handler else ""
        prompt_chars = sum(len(m.text()) for m in request.messages)
        # Built without validation: every value is of its field's type by construction (the engine
        # calls this a few times a sample, in process).
        return construct(
            LLMResponse,
            text=text,
            model=self.model,
            usage=construct(Usage, prompt_tokens=max(1, prompt_chars // 4), completion_tokens=_tokens(text)),
            finish_reason="stop",
        )

    # -- stage 2 ----------------------------------------------------------------------------

    @staticmethod
    def _first_tools(ctx: dict[str, Any]) -> list[str]:
        enabled = ctx.get("tools", [])
        question = ctx.get("question", "")
        wanted: list[str] = []
        if ctx.get("task_type") in _TEXT_TASKS or re.search(r"\b(text|written|say|title|label|number|value|total)\b", question, re.I):
            wanted.append("ocr")
        if _PEOPLE.search(question):
            wanted.append("face_detection")
        if not wanted:
            wanted.append("image_caption")
        chosen = [t for t in wanted if t in enabled]
        return chosen or [t for t in ("image_caption", "ocr") if t in enabled][:1]

    def _rationale_step(self, ctx: dict[str, Any]) -> str:
        turn = int(ctx.get("turn", 0))
        history: list[dict[str, Any]] = ctx.get("history", [])
        question = ctx.get("question", "")
        enabled = ctx.get("tools", [])
        if turn == 0:
            tools = self._first_tools(ctx)
            needs_search = bool(ctx.get("rag")) and ctx.get("task_type") == "knowledge"
            look = " and ".join(t.replace("_", " ") for t in tools) or "careful inspection"
            step = {
                "thought": f"The question asks: {_clip(question, 160)} I will start by examining the image with {look}.",
                "operators": tools,
                "rag": {"needed": needs_search, "query": _clip(question, 120) if needs_search else None},
                "next_action": "continue",
            }
        elif turn == 1 and history:
            observed = "; ".join(f"the {name.replace('_', ' ')} result says \"{_clip(text, 200)}\"" for name, text in history[-1]["results"])
            used = {name for h in history for name, _ in h["results"]}
            # Every configured operator runs once per sample, third-party ones included, so a
            # no-key build shows each tool's results in the RR data (the plugin guide relies on it).
            follow = [t for t in enabled if t not in used]
            step = {
                "thought": f"From the previous step, {observed or 'no operator output came back'}. "
                f"I will relate this evidence to the entities in the question ({', '.join(_nouns(question))}).",
                "operators": follow,
                "rag": {"needed": False, "query": None},
                "next_action": "continue",
            }
        else:
            answer = ctx.get("answer", "")
            choice = ""
            choices = ctx.get("choices") or []
            if choices and len(answer) == 1 and answer.isalpha():
                index = ord(answer.upper()) - ord("A")
                if 0 <= index < len(choices):
                    choice = f" (option {answer.upper()}: {choices[index]})"
            step = {
                "thought": f"Putting the observations together, the evidence supports {answer}{choice} as the answer to the question.",
                "operators": [],
                "rag": {"needed": False, "query": None},
                "next_action": "final_answer",
            }
        return json.dumps(step, ensure_ascii=False)

    def _final_answer(self, ctx: dict[str, Any]) -> str:
        return str(ctx.get("answer", ""))

    # -- tools that use the VLM -------------------------------------------------------------

    def _scene_graph(self, ctx: dict[str, Any]) -> str:
        objects = _nouns(ctx.get("question", ""))
        return json.dumps({"objects": objects, "attributes": [], "relationships": []})

    def _caption(self, ctx: dict[str, Any]) -> str:
        graph = ctx.get("scene_graph") or {}
        objects = graph.get("objects") or ["the scene"]
        size = ctx.get("image_size")
        dims = f" ({size[0]}x{size[1]} pixels)" if size else ""
        return f"An image{dims} in which the question concerns {', '.join(objects)}."

    # -- stage 3 ----------------------------------------------------------------------------

    def _critic_general(self, ctx: dict[str, Any]) -> str:
        return "{}"

    def _critic_math(self, ctx: dict[str, Any]) -> str:
        return json.dumps({"reason": "", "thought": "null"})

    def _critic_quality(self, ctx: dict[str, Any]) -> str:
        return json.dumps({"quality_score": 0.8, "scoring_reason": "offline backend: a fixed score, not a judgement"})

    def _reflection_correction(self, ctx: dict[str, Any]) -> str:
        return "Going back over the evidence step by step, each observation above is consistent with the conclusion."
