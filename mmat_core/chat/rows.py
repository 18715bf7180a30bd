"""The rows a :class:`~mmat_core.chat.ChatEngine` takes, turned into the engine's requests.

A row is one of:

- a string: one user message;
- a list of chat messages, ``{"role": "system" | "user" | "assistant", "content": ...}``, where
  content is a string or a list of parts: ``{"type": "text", "text": ...}``,
  ``{"type": "image", "image": IMAGE}``, or OpenAI's ``{"type": "image_url", "image_url": {"url":
  IMAGE}}`` (so messages written for the OpenAI API are taken as they are);
- a :class:`ChatRequest`, or a dict of its fields (``prompt`` or ``messages``, ``images``,
  ``system``, ``response_format``, ``temperature``, ``max_tokens``).

An IMAGE is a path (``str`` or ``os.PathLike``), a base64 ``data:`` URL, the encoded bytes of a
picture, or a PIL image (http URLs are not fetched).
Each is read through :func:`~mmat_core.images.read_regular_file` (a directory, a device or a FIFO
is refused, files have a size limit and a read deadline), checked with
:func:`~mmat_core.images.inspect_image` (decodable, not a decompression bomb) and hashed: the
request and its cache key hold the hash, the bytes stay beside the request until it is answered.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmat_core.components import ContentPart, LLMRequest, Message
from mmat_core.errors import RowError, first_validation_problem
from mmat_core.images import DEFAULT_MAX_BYTES, ImageError, image_ref_from_bytes, read_regular_file

#: The purpose of every ChatEngine request (cache entries and ``mmat cache stats`` show it).
CHAT_PURPOSE = "chat"


class ChatRequest(BaseModel):
    """One row as a typed request: ``prompt`` (one user message) or ``messages``, with optional
    ``images`` (paths, bytes or PIL images) added to the last user message before its text."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    prompt: str | None = Field(None, description="the user message (or give messages)")
    messages: list[dict[str, Any]] | None = Field(None, description="chat messages, OpenAI-style roles and content")
    images: list[Any] = Field(default_factory=list, description="paths, bytes or PIL images for the last user message")
    system: str | None = Field(None, description="system prompt (overrides the engine's)")
    response_format: Any = Field(None, description="a pydantic model class or a JSON Schema dict: the reply is parsed")
    temperature: float | None = Field(None, description="overrides the engine's temperature")
    max_tokens: int | None = Field(None, ge=1, description="overrides the engine's max_tokens")

    @model_validator(mode="after")
    def _one_of_prompt_or_messages(self) -> ChatRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        return self


@dataclass
class PreparedRow:
    """A row ready for the engine: its request, the bytes of its images by hash, and what its
    reply is parsed with."""

    request: LLMRequest
    images: dict[str, bytes] = field(default_factory=dict)
    schema_model: type[BaseModel] | None = None


@dataclass
class RowDefaults:
    """What a row leaves unset comes from the engine."""

    system: str | None = None
    response_format: Any = None
    temperature: float | None = None
    max_tokens: int | None = 1024
    max_row_chars: int | None = 1_000_000
    max_image_bytes: int = DEFAULT_MAX_BYTES


def _has_parts(messages: Any) -> bool:
    return isinstance(messages, list) and any(isinstance(m, dict) and not isinstance(m.get("content"), str)
                                              for m in messages)


def needs_io(row: Any) -> bool:
    """Whether preparing ``row`` may read files or decode images (so it belongs off the event loop):
    a row with images, or with message content given as parts."""
    if isinstance(row, str):
        return False
    if isinstance(row, ChatRequest):
        return bool(row.images) or _has_parts(row.messages)
    if isinstance(row, dict):
        return bool(row.get("images")) or _has_parts(row.get("messages"))
    return _has_parts(row)


def response_schema(response_format: Any) -> tuple[dict[str, Any] | None, type[BaseModel] | None]:
    """The JSON Schema sent for ``response_format`` and the pydantic model the reply is parsed
    into (None for a plain schema dict)."""
    if response_format is None:
        return None, None
    if isinstance(response_format, type) and issubclass(response_format, BaseModel):
        return response_format.model_json_schema(), response_format
    if isinstance(response_format, dict):
        return response_format, None
    raise RowError("bad_row", f"response_format must be a pydantic model class or a JSON Schema dict, "
                              f"not {type(response_format).__name__}")


def image_bytes(image: Any, max_bytes: int) -> tuple[bytes, str | None]:
    """The encoded bytes of one image input and the path it came from (None for bytes and PIL)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if len(data) > max_bytes:
            raise ImageError("image_too_large", f"{len(data):,} bytes > {max_bytes:,}")
        return data, None
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path.startswith("data:"):
            return _data_url(path, max_bytes), None
        if path.startswith(("http://", "https://")):
            raise RowError("bad_image", f"{path[:60]!r}: give a local path, bytes, a data: URL or a PIL image "
                                        "(URLs are not fetched)")
        return read_regular_file(path, max_bytes), path
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image, without importing PIL for the check
        buffer = io.BytesIO()
        try:
            image.save(buffer, format="PNG")
        except (OSError, ValueError):  # a mode PNG cannot hold (CMYK, I;16 ...): as RGB
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue(), None
    raise RowError("bad_image", f"an image is a path, bytes or a PIL image, not {type(image).__name__}")


def _data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a base64 ``data:`` URL (what OpenAI-style messages carry)."""
    header, _, payload = url.partition(",")
    if not header.endswith(";base64") or not payload:
        raise RowError("bad_image", "a data: URL must be base64 (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageError("image_too_large", f"about {len(payload) * 3 // 4:,} bytes > {max_bytes:,}")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise RowError("bad_image", f"the data: URL is not valid base64 ({exc})") from None


def _add_image(image: Any, defaults: RowDefaults, held: dict[str, bytes]) -> ContentPart:
    data, path = image_bytes(image, defaults.max_image_bytes)
    ref = image_ref_from_bytes(data, path)  # decodes it: an ImageError names what is wrong
    held[ref.sha256] = data
    return ContentPart(type="image", image=ref)


def _parts(content: Any, defaults: RowDefaults, held: dict[str, bytes], where: str) -> str | list[ContentPart]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RowError("bad_row", f"{where}.content must be a string or a list of parts, not {type(content).__name__}")
    parts: list[ContentPart] = []
    for n, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(ContentPart(type="text", text=part["text"]))
        elif kind == "image" and "image" in part:
            parts.append(_add_image(part["image"], defaults, held))
        elif kind == "image_url" and isinstance(part.get("image_url"), dict) and isinstance(part["image_url"].get("url"), str):
            parts.append(_add_image(part["image_url"]["url"], defaults, held))  # OpenAI's layout, as sent
        else:
            raise RowError("bad_row", f"{where}.content[{n}] must be {{'type': 'text', 'text': str}}, "
                                      "{'type': 'image', 'image': path | bytes | PIL image} or "
                                      "{'type': 'image_url', 'image_url': {'url': data: URL or path}}")
    return parts


def _check_encodable(text: str, where: str) -> None:
    """A lone surrogate (``"\\ud800"``, what a bad decode with ``surrogateescape`` or a cut emoji
    leaves) is no Unicode text: no request body or cache key can hold it, so it is the row's
    error, named, before anything is sent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowError("bad_text", f"{where} holds a lone surrogate {text[exc.start]!r} at character {exc.start} "
                                   "(not valid Unicode; decode the text with errors='replace')") from None


def as_request(row: Any) -> ChatRequest:
    """``row`` (a string, a list of messages, a dict or a ChatRequest) as a ChatRequest."""
    if isinstance(row, ChatRequest):
        return row
    if isinstance(row, str):
        return ChatRequest(prompt=row)
    try:
        if isinstance(row, list):
            return ChatRequest(messages=row)
        if isinstance(row, dict):
            return ChatRequest.model_validate(row)
    except ValidationError as exc:
        raise RowError("bad_row", first_validation_problem(exc)) from None
    raise RowError("bad_row", f"a row is a string, a list of messages or a dict, not {type(row).__name__}")


def prepare_row(row: Any, defaults: RowDefaults) -> PreparedRow:
    """The engine request for one row; raises :class:`~mmat_core.errors.RowError` for a row of
    the wrong shape or over ``max_row_chars``, :class:`~mmat_core.images.ImageError` for an image
    that cannot be used. Reads files: call it off the event loop."""
    spec = as_request(row)
    held: dict[str, bytes] = {}
    messages: list[Message] = []
    has_system = bool(spec.messages) and any(isinstance(m, dict) and m.get("role") == "system" for m in spec.messages or [])
    if spec.system is not None and has_system:
        raise RowError("bad_row", "the row gives a system prompt twice (system and a system message); give it once")
    system = spec.system if spec.system is not None else defaults.system
    if system is not None and not has_system:
        messages.append(Message(role="system", content=system))
    if spec.prompt is not None:
        messages.append(Message(role="user", content=spec.prompt))
    else:
        for n, message in enumerate(spec.messages or []):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("system", "user", "assistant") or set(message) - {"role", "content"}:
                raise RowError("bad_row", f"messages[{n}] must be {{'role': 'system' | 'user' | 'assistant', "
                                          "'content': ...}")
            messages.append(Message(role=role, content=_parts(message.get("content"), defaults, held, f"messages[{n}]")))
    if spec.images:
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
        if last_user is None:
            raise RowError("bad_row", "images were given but the row has no user message to attach them to")
        text = last_user.content
        parts = [_add_image(image, defaults, held) for image in spec.images]
        last_user.content = parts + ([ContentPart(type="text", text=text)] if isinstance(text, str) else text)
    if not any(m.role == "user" for m in messages):
        raise RowError("bad_row", "the row has no user message")
    for message in messages:
        _check_encodable(message.text(), f"the {message.role} message")
    chars = sum(len(m.text()) for m in messages)
    if defaults.max_row_chars is not None and chars > defaults.max_row_chars:
        raise RowError("row_too_long", f"{chars:,} characters > max_row_chars={defaults.max_row_chars:,}; "
                                       "nothing was sent")
    schema, model = response_schema(spec.response_format if spec.response_format is not None
                                    else defaults.response_format)
    request = LLMRequest(
        purpose=CHAT_PURPOSE,
        messages=messages,
        temperature=spec.temperature if spec.temperature is not None else defaults.temperature,
        max_tokens=spec.max_tokens if spec.max_tokens is not None else defaults.max_tokens,
        response_schema=schema,
    )
    return PreparedRow(request=request, images=held, schema_model=model)
