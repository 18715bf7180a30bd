"""What the HTTP backends share: API keys, images on the wire, HTTP errors, structured output.

Keys come from the environment only. A backend's options hold the *name* of the variable
(``api_key_env``), never the key, so a key cannot reach ``run.json``, a cache key or a log line,
and error texts pass through :func:`mmat_core.engine.errors.scrub` before they leave a backend.
"""

from __future__ import annotations

import base64
import json
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from mmat_core.components import LLMRequest, LLMResponse, Message
from mmat_core.engine.errors import CallTimeout, LLMCallError, MalformedResponse, Overloaded, PermanentError, RateLimited, scrub
from mmat_core.errors import ConfigError
from mmat_core.images import ImageStore
from mmat_core.models import ImageRef, Usage
from mmat_core.replies import extract_json_object, strip_code_fence
from mmat_core.secrets import remember

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "JPG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


def api_key_from_env(variable: str | None, backend: str, *, required: bool = True) -> str | None:
    """The API key in environment variable ``variable``; a ConfigError saying what to set when it
    is missing (None when ``variable`` is None: servers that need no key)."""
    if not variable:
        return None
    key = os.environ.get(variable, "").strip()
    if not key and required:
        raise ConfigError(
            f"the {backend} backend needs an API key: set the environment variable {variable} "
            f"(or name another variable with the option api_key_env; use api_key_env: null for a local "
            "server that needs none)",
            key="llm.api_key_env",
        )
    remember(key)  # scrubbed from everything stored or printed, whatever the variable's name
    return key or None


def mime_type(ref: ImageRef, data: bytes) -> str:
    """The media type of an image, from its recorded format or its first bytes."""
    if ref.format and ref.format.upper() in _MIME:
        return _MIME[ref.format.upper()]
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"GIF":
        return "image/gif"
    return "image/png"


class ImageEncoder:
    """Base64 of images by content hash, kept for the few most recent: a rationale dialogue
    resends the same picture every turn, and encoding it once is enough."""

    def __init__(self, images: ImageStore | None = None, capacity: int = 64) -> None:
        self.capacity = capacity
        self._cache: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def encode(self, ref: ImageRef, images: ImageStore) -> tuple[str, str]:
        """(media type, base64 text) of ``ref``; raises PermanentError when the bytes are gone."""
        hit = self._cache.get(ref.sha256)
        if hit is not None:
            self._cache.move_to_end(ref.sha256)
            return hit
        try:
            data = images.load(ref)
        except Exception as exc:  # ImageError: the sample's image vanished or changed
            raise PermanentError(f"cannot load image {ref.sha256[:12]} for the model: {exc}") from None
        value = (mime_type(ref, data), base64.b64encode(data).decode("ascii"))
        self._cache[ref.sha256] = value
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return value


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime
        from datetime import datetime, timezone

        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return None


def error_message(body: bytes | str | None) -> str:
    """The provider's error message from an error body (OpenAI or Anthropic envelope)."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "")[:500]
    return text[:200]


def error_for_status(status: int, message: str, headers: Any, *, backend: str, secret: str | None) -> LLMCallError:
    """The engine error for an HTTP error status: 429 rate limited, 408/409/5xx/529 overloaded
    (retryable), anything else permanent."""
    message = scrub(message, secret)
    if status == 429:
        return RateLimited(f"{backend}: rate limited (429): {message}", retry_after=parse_retry_after(headers), status=status)
    if status in (408, 409) or status >= 500:
        return Overloaded(f"{backend}: server error {status}: {message}", retry_after=parse_retry_after(headers), status=status)
    hint = {401: " (check the API key variable named by api_key_env)", 404: " (check base_url and the model name)"}.get(status, "")
    return PermanentError(f"{backend}: request refused ({status}): {message}{hint}", status=status)


def extract_json(text: str) -> Any:
    """The JSON value in a reply, tolerating code fences and text around one object."""
    body = strip_code_fence(text)
    try:
        return json.loads(body)
    except ValueError:
        return extract_json_object(body)  # a ReplyJSONError (a ValueError) when there is none


def schema_problem(text: str, schema: dict[str, Any]) -> str | None:
    """Why ``text`` does not satisfy ``schema`` (None when it does)."""
    import jsonschema

    try:
        data = extract_json(text)
    except ValueError as exc:
        return f"the reply is not valid JSON ({exc})"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if not errors:
        return None
    where = "/".join(map(str, errors[0].path)) or "(root)"
    return f"{where}: {errors[0].message}"


REPAIR_INSTRUCTION = (
    "Your previous reply did not match the required JSON schema: {problem}. "
    "Reply again with only one JSON object that matches the schema."
)


def malformed(backend: str, what: str) -> MalformedResponse:
    """A MalformedResponse naming the backend."""
    return MalformedResponse(f"{backend}: malformed response: {what}")


async def complete_with_repair(
    request: LLMRequest,
    send: Callable[[list[Message]], Awaitable[LLMResponse]],
    attempts: int,
) -> LLMResponse:
    """Send ``request``'s messages; when a reply misses ``request.response_schema``, re-ask up to
    ``attempts`` times with the problem stated. Usage of every attempt is summed into the reply,
    and ``usage.calls`` says how many requests were sent (the engine counts each one as paid)."""
    messages = list(request.messages)
    if request.response_schema is None:  # nothing to validate, nothing to repair: one call
        return await send(messages)
    total = Usage()
    for attempt in range(attempts + 1):
        response = await send(messages)
        total.add(response.usage)
        problem = schema_problem(response.text, request.response_schema)
        if problem is None or attempt == attempts:
            total.calls = attempt + 1
            response.usage = total
            return response
        messages = messages + [Message(role="assistant", content=response.text),
                               Message(role="user", content=REPAIR_INSTRUCTION.format(problem=problem))]
    raise AssertionError("unreachable")


def map_sdk_error(sdk: Any, exc: Exception, *, backend: str, secret: str | None, timeout_s: float) -> LLMCallError:
    """The engine error for an exception of an official client (``openai`` or ``anthropic``:
    both SDKs share one exception hierarchy), with the key scrubbed from every message."""
    if isinstance(exc, sdk.APIStatusError):
        return error_for_status(exc.status_code, str(getattr(exc, "message", exc)), exc.response.headers,
                                backend=backend, secret=secret)
    if isinstance(exc, sdk.APITimeoutError):
        return CallTimeout(f"{backend}: no reply within {timeout_s:g}s")
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc
        return MalformedResponse(f"{backend}: connection failed or closed early: "
                                 f"{scrub(f'{type(cause).__name__}: {cause}', secret)}")
    if isinstance(exc, (ValueError, sdk.APIResponseValidationError)):
        return malformed(backend, scrub(f"{type(exc).__name__}: {exc}", secret))
    return PermanentError(f"{backend}: {scrub(f'{type(exc).__name__}: {exc}', secret)}")
