"""The OpenAI chat-completions wire format as ``mmat serve`` reads and writes it.

A request is checked with pydantic at the boundary; everything a client can get wrong becomes a
:class:`RequestError` with the HTTP status and OpenAI error ``type``/``code`` to answer with. The
dialogue is turned into what the agent takes: one question, the images of the user turns (written
to files, since tools read files) and, for a multi-turn chat, the earlier turns as context.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmat_core.errors import MmatError, first_validation_problem
from mmat_core.images import ImageError, inspect_image, read_regular_file, sha256_bytes
from mmat_core.models import ModelCall, Trace

if TYPE_CHECKING:
    from mmat_plugins.agent.chat import GenerationSettings

#: Part types of a message's content that the server understands.
CONTENT_TYPES = ("text", "image_url")
#: Image bytes accepted per image (decoded), the same cap mmat applies to image files.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: How earlier turns of a multi-turn chat are put before the question (single-turn chats are sent
#: exactly as the model was trained, without this).
CONTEXT_HEADER = "Earlier in this conversation:\n"


class RequestError(MmatError):
    """A request the server refuses; carries the HTTP status and the OpenAI error fields."""

    def __init__(self, message: str, *, status: int = 400, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI clients parse: ``{"error": {"message", "type", "param", "code"}}``."""
        return error_body(str(self), type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Wire(BaseModel):
    # Clients send many fields the agent has no use for (logprobs, user, penalties, ...): ignored.
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Wire):
    """``{"url": ..., "detail": ...}`` of an ``image_url`` part."""

    url: str
    detail: str | None = None


class ContentPart(_Wire):
    """One part of a message's content."""

    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None


class ChatMessage(_Wire):
    """One message of the dialogue."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class ChatRequest(_Wire):
    """The fields of ``POST /v1/chat/completions`` that the server reads."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    n: int = 1
    #: Generation settings, passed to each of the agent's own model calls (see :meth:`settings`).
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    #: mmat extension: the response-style constraint, kept apart from the question as in training
    #: (e.g. "Answer the question using a single word or phrase.").
    mmat_constraint: str = ""


def parse_request(body: Any) -> ChatRequest:
    """Validate a request body; a problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for required in ("model", "messages"):
        if required not in body:
            raise RequestError(f"'{required}' is required", param=required)
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as exc:
        problem = first_validation_problem(exc)
        param = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else None
        raise RequestError(f"invalid request: {problem}", param=param) from None
    if request.n != 1:
        raise RequestError("only n=1 is supported: the agent gives one answer per question", param="n")
    _check_settings(request)
    return request


#: Highest ``stop`` sequences a request may give (OpenAI's limit).
MAX_STOP_SEQUENCES = 4


def _out_of_range(param: str, value: float, low: float, high: float | None) -> RequestError:
    bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
    return RequestError(f"Invalid '{param}': {value!r} is out of range; it must be {bound}", param=param,
                        code="invalid_value")


def _check_settings(request: ChatRequest) -> None:
    """OpenAI's ranges for the generation settings the agent honours; a value outside is a 400."""
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(request, name)
        if value is not None and value < 1:
            raise _out_of_range(name, value, 1, None)
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        raise _out_of_range("temperature", request.temperature, 0, 2)
    if request.top_p is not None and not 0 <= request.top_p <= 1:
        raise _out_of_range("top_p", request.top_p, 0, 1)
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stops) > MAX_STOP_SEQUENCES:
        raise RequestError(f"Invalid 'stop': at most {MAX_STOP_SEQUENCES} sequences, got {len(stops)}", param="stop",
                           code="invalid_value")
    if any(not s for s in stops):
        raise RequestError("Invalid 'stop': a stop sequence must not be empty", param="stop", code="invalid_value")


def generation_settings(request: ChatRequest) -> GenerationSettings:
    """The request's generation settings for the agent's model calls. ``max_completion_tokens``
    (OpenAI's newer name) wins over ``max_tokens``: a cap per call, never for the whole answer (the
    server's ``request_max_tokens`` says which calls: the answer's, each, or none)."""
    from mmat_plugins.agent.chat import GenerationSettings

    stops = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    return GenerationSettings(max_tokens=request.max_completion_tokens or request.max_tokens,
                              temperature=request.temperature, top_p=request.top_p, stop=stops, seed=request.seed)


@dataclass
class ImagePolicy:
    """Which image references a request may use besides ``data:`` URLs."""

    local_files: bool = True
    remote_urls: bool = False
    max_bytes: int = MAX_IMAGE_BYTES


@dataclass
class AgentQuery:
    """What one request asks of the agent."""

    question: str
    images: list[Path] = field(default_factory=list)
    constraint: str = ""
    ignored: list[str] = field(default_factory=list)


def _text(content: str | list[ContentPart] | None, where: str) -> tuple[str, list[tuple[str, str]]]:
    """The text of a message and its image URLs (with the param path naming each)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    urls: list[tuple[str, str]] = []
    for index, part in enumerate(content):
        param = f"{where}.content.{index}"
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url":
            url = part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
            if not url:
                raise RequestError("an image_url part needs image_url.url", param=param)
            urls.append((url, param))
        else:
            raise RequestError(f"unsupported content part type '{part.type}'; allowed: {', '.join(CONTENT_TYPES)}",
                               param=param)
    return "\n".join(t for t in texts if t), urls


def _suffix(data: bytes) -> str:
    kind = inspect_image(data)[2].lower()
    return {"jpeg": ".jpg"}.get(kind, f".{kind}")


def _checked(data: bytes, param: str, policy: ImagePolicy) -> bytes:
    if len(data) > policy.max_bytes:
        raise RequestError(f"image too large: {len(data)} bytes, at most {policy.max_bytes}", param=param)
    try:
        inspect_image(data)
    except ImageError as exc:
        # A decoder's message names in-memory objects: the reason alone says it better.
        raise RequestError(f"not a usable image ({exc.reason if exc.reason == 'image_corrupt' else exc})",
                           param=param) from None
    return data


def _decode_data_url(url: str, param: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:"):
        raise RequestError("a data: URL must look like data:image/png;base64,<base64>", param=param)
    if not header.endswith(";base64"):
        raise RequestError("a data: URL must be base64-encoded (data:<mime>;base64,...)", param=param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("the data: URL is not valid base64", param=param) from None


def _local_path(url: str) -> Path:
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise RequestError(f"file URL names another host '{parts.netloc}'")
        return Path(unquote(parts.path))
    return Path(url).expanduser()


async def resolve_image(url: str, param: str, policy: ImagePolicy, folder: Path) -> Path:
    """A checked image file for one ``image_url``: data URLs are written into ``folder``."""
    scheme = urlsplit(url).scheme.lower() if "://" in url or url.startswith("data:") else ""
    if scheme == "data":
        data = _checked(_decode_data_url(url, param), param, policy)
    elif scheme in ("http", "https"):
        if not policy.remote_urls:
            raise RequestError("image URLs are refused by this server: send the image as a data: URL "
                               "(data:image/png;base64,...), or start it with --allow-remote-images", param=param,
                               code="image_url_refused")
        from mmat_core.fetch import FetchError, FetchPolicy, fetch_url

        try:
            data = await asyncio.to_thread(fetch_url, url, FetchPolicy(max_bytes=policy.max_bytes))
        except FetchError as exc:
            raise RequestError(f"cannot fetch the image ({exc})", param=param) from None
        data = _checked(data, param, policy)
    elif scheme in ("", "file"):
        if not policy.local_files:
            raise RequestError("local image paths are refused by this server: send the image as a data: URL, "
                               "or start it with --local-images", param=param, code="image_url_refused")
        path = _local_path(url)
        try:
            data = _checked(await asyncio.to_thread(read_regular_file, path, policy.max_bytes), param, policy)
        except ImageError as exc:
            raise RequestError(f"cannot read the image file {path} ({exc})", param=param) from None
        return path
    else:
        raise RequestError(f"unsupported image URL scheme '{scheme}'; allowed: data, file, or a path"
                           + (", http, https" if policy.remote_urls else ""), param=param)
    target = folder / f"{sha256_bytes(data)[:32]}{_suffix(data)}"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(target.write_bytes, data)
    return target


async def agent_query(request: ChatRequest, policy: ImagePolicy, folder: Path) -> AgentQuery:
    """The question, images and context of a chat request.

    The last message must be the user's: its text is the question. Images of every user turn are
    attached in order. Earlier user and assistant turns, when there are any, go before the question
    under :data:`CONTEXT_HEADER`. System and developer messages are not sent: the agent's own
    system prompt is the one the model was trained with (they are listed in ``ignored``).
    """
    messages = request.messages
    if messages[-1].role != "user":
        raise RequestError(f"the last message must be the user's question, not '{messages[-1].role}'",
                           param=f"messages.{len(messages) - 1}.role")
    image_urls: list[tuple[str, str]] = []
    history: list[str] = []
    ignored: list[str] = []
    question = ""
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        text, urls = _text(message.content, where)
        if urls and message.role != "user":
            raise RequestError(f"images are accepted in user messages only, not '{message.role}'", param=where)
        image_urls.extend(urls)
        if message.role in ("system", "developer"):
            if text:
                ignored.append(message.role)
            continue
        if message.role == "tool":
            raise RequestError("tool messages are not accepted: the agent runs its own tools", param=where)
        if index == len(messages) - 1:
            question = text
        else:
            history.append(f"{message.role}: {text}")
    if not question.strip():
        raise RequestError("the last user message has no text: ask a question about the image",
                           param=f"messages.{len(messages) - 1}.content")
    if history:
        question = CONTEXT_HEADER + "\n".join(history) + "\n\n" + question
    # Images last: the cheap checks above answer a malformed chat before any image is decoded.
    images = [await resolve_image(url, param, policy, folder) for url, param in image_urls]
    return AgentQuery(question=question, images=images, constraint=request.mmat_constraint, ignored=ignored)


def trace_summary(trace: Trace, mode: str, ignored: Sequence[str] = (), calls: Sequence[ModelCall] = ()) -> dict[str, Any]:
    """What the agent did for one answer: the ``mmat_trace`` field of a response.

    Steps carry the thought, the operators the model asked for, each tool's result (or error, and
    whether it came from the tool cache), the RAG query with its result, the signal and the
    observation sent back; ``calls`` lists every model call with its token counts. The full
    :class:`~mmat_core.models.Trace` goes to the ``--log`` file.
    """
    steps = []
    for step in trace.steps:
        steps.append({
            "kind": step.kind,
            "thought": step.thought,
            "operators": list(step.operators),
            "tool_calls": [{"name": c.name, "result": c.result, "error": c.error, "cached": c.cached}
                           for c in step.tool_calls],
            "rag": None if step.rag is None else {"query": step.rag.query, "result": step.rag.result,
                                                  "error": step.rag.error},
            "rag_query": step.rag_query,
            "signal": step.signal,
            "observation": step.observation,
        })
    return {
        "mode": mode,
        "status": trace.status,
        "failure": trace.failure,
        "steps": steps,
        "final_answer": trace.final_answer,
        "model_calls": trace.usage.calls,
        "calls": [{"purpose": c.purpose, "prompt_tokens": c.usage.prompt_tokens,
                   "completion_tokens": c.usage.completion_tokens, "latency_s": round(c.usage.latency_s, 4)}
                  for c in calls],
        "notes": list(trace.notes),
        "ignored_messages": list(ignored),
    }


def completion_body(model: str, answer: str, summary: dict[str, Any], trace: Trace,
                    calls: Sequence[ModelCall] | None = None, finish_reason: str = "stop") -> dict[str, Any]:
    """A ``chat.completion`` object with the answer and the ``mmat_trace`` extension field.

    ``finish_reason`` is that of the call whose reply is the answer (``length``: it hit its token
    cap, so the answer may be cut short); the RR steps before it do not count.

    ``usage`` sums the token counts of the run's model calls (``calls``; the trace's usage when
    not given): every RR step, the final answer, and the calls tools such as ``image_caption``
    made. A tool result from the cache made no call and counts nothing."""
    prompt = sum(c.usage.prompt_tokens for c in calls) if calls is not None else trace.usage.prompt_tokens
    completion = sum(c.usage.completion_tokens for c in calls) if calls is not None else trace.usage.completion_tokens
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish_reason,
                     "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "mmat_trace": summary,
    }


def stream_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished completion as ``chat.completion.chunk`` objects: the whole answer in one chunk,
    then the stop chunk (with usage and ``mmat_trace``). The agent answers only at its end, so
    there is nothing to stream earlier."""
    base = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
    content = body["choices"][0]["message"]["content"]
    return [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": body["choices"][0]["finish_reason"]}],
         "usage": body["usage"],
         "mmat_trace": body["mmat_trace"]},
    ]
