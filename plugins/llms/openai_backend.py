"""The ``openai`` backend: OpenAI, or any OpenAI-compatible server through ``base_url`` (vLLM,
SGLang, Ollama, LM Studio).

Model calls go over one of three transports (option ``transport``):

- ``aiohttp`` (default): mmat posts the documented chat-completions JSON itself on a pooled
  aiohttp session and reads only the fields it needs. Measured on a 2-core machine against a
  loopback server (docs/llms.md) it stays within reach of a bare aiohttp loop, where the official
  client spends 1 to 3 ms of CPU per call and cannot keep 256 calls in flight.
- ``sdk``: the official ``openai.AsyncOpenAI`` client on its aiohttp transport
  (``DefaultAioHttpClient``).
- ``sdk-httpx``: the official client on its default ``httpx2`` transport.

The Batch API (files upload, batch create, poll, download) always goes through the official
client: it is a handful of calls per batch, where convenience beats speed.

Images are loaded from the run's image store and sent as base64 data URLs; traces never hold
them. Structured output uses ``response_format: json_schema`` (``structured_output: json_object``
or ``none`` for servers without it); replies are validated against the schema and re-asked up to
``schema_repair_attempts`` times when they do not match.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from mmat_core.components import ComponentOptions, LLMBackend, LLMRequest, LLMResponse, Message
from mmat_core.engine.errors import CallTimeout, LLMCallError, MalformedResponse, Overloaded, scrub
from mmat_core.images import ImageStore
from mmat_core.jsonl import BadLine, iter_jsonl
from mmat_core.models import Usage
from mmat_plugins.llms.common import (
    ImageEncoder,
    api_key_from_env,
    complete_with_repair,
    error_for_status,
    error_message,
    malformed,
    map_sdk_error,
)

if TYPE_CHECKING:
    import asyncio

try:  # orjson halves the JSON share of a call's CPU; the standard library does the same job slower
    import orjson

    _dumps, _loads = orjson.dumps, orjson.loads
except ImportError:  # pragma: no cover
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    _loads = json.loads


class OpenAIOptions(ComponentOptions):
    """Options of the openai backend."""

    model: str = Field("gpt-4o", description="model name sent to the server")
    base_url: str = Field("https://api.openai.com/v1", description="API root; point it at any OpenAI-compatible server")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key; null = no key")
    transport: Literal["aiohttp", "sdk", "sdk-httpx"] = Field("aiohttp", description="how calls go on the wire")
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema", description="how a response schema is requested from the server")
    schema_repair_attempts: int = Field(1, ge=0, le=5, description="re-asks when a reply does not match its schema")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="parameter name for the completion budget (o-series models want max_completion_tokens)")
    http_timeout_s: float = Field(600.0, gt=0, description="HTTP-level timeout (the scheduler's timeout_s usually fires first)")


class OpenAIBackend(LLMBackend):
    """OpenAI chat completions, multimodal, with structured output and the Batch API."""

    name = "openai"
    version = "1"
    answer_options = ("base_url", "structured_output", "max_tokens_field")
    description = "OpenAI or any OpenAI-compatible server (vLLM, SGLang, Ollama, LM Studio) via base_url"
    Options = OpenAIOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        opts: OpenAIOptions = self.options  # type: ignore[assignment]
        # Read once, kept out of options: options end up in run.json, the key must not.
        self._api_key = api_key_from_env(opts.api_key_env, self.name)
        self._base = opts.base_url.rstrip("/")
        self._encoder = ImageEncoder()
        self._session: Any = None
        self._url: Any = None  # the completions URL, parsed once: aiohttp would parse a string per call
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._sdk: Any = None
        self._sdk_loop: asyncio.AbstractEventLoop | None = None

    @property
    def opts(self) -> OpenAIOptions:
        """The typed options."""
        return self.options  # type: ignore[return-value]

    # -- request body ---------------------------------------------------------------------

    def wire_messages(self, messages: list[Message], images: ImageStore) -> list[dict[str, Any]]:
        """Chat messages in OpenAI's layout, images as base64 data URLs."""
        out: list[dict[str, Any]] = []
        for message in messages:
            if isinstance(message.content, str):
                out.append({"role": message.role, "content": message.content})
                continue
            parts: list[dict[str, Any]] = []
            for part in message.content:
                if part.type == "image" and part.image is not None:
                    mime, data = self._encoder.encode(part.image, images)
                    parts.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}})
                else:
                    parts.append({"type": "text", "text": part.text or ""})
            out.append({"role": message.role, "content": parts})
        return out

    def payload(self, request: LLMRequest, images: ImageStore, messages: list[Message] | None = None) -> dict[str, Any]:
        """The chat-completions request body."""
        body: dict[str, Any] = {"model": self.opts.model, "messages": self.wire_messages(messages or request.messages, images)}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body[self.opts.max_tokens_field] = request.max_tokens
        if request.response_schema is not None:
            if self.opts.structured_output == "json_schema":
                body["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": request.purpose.replace("-", "_")[:64] or "reply", "schema": request.response_schema, "strict": False}}
            elif self.opts.structured_output == "json_object":
                body["response_format"] = {"type": "json_object"}
        return body

    def parse(self, data: Any) -> LLMResponse:
        """An LLMResponse from a chat.completion object (raises MalformedResponse)."""
        try:
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content")
            if text is None:
                text = message.get("refusal") or ""
            usage = data.get("usage") or {}
            model = data.get("model") or self.opts.model
            finish_reason = choice.get("finish_reason")
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise malformed(self.name, f"no choices[0].message or unreadable usage in the reply ({type(exc).__name__}: {exc})") from None
        if not isinstance(text, str) or not isinstance(model, str) or not (finish_reason is None or isinstance(finish_reason, str)):
            raise malformed(self.name, "choices[0].message.content, model and finish_reason must be strings")
        # Checked here rather than left to pydantic, so a wrong type reads as a malformed reply
        # (retried) instead of a validation error. (Skipping validation with model_construct was
        # measured: it is slower than pydantic-core validating these few fields.)
        return LLMResponse(text=text, model=model, finish_reason=finish_reason,
                           usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))

    # -- transports -----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _aiohttp_session(self) -> Any:
        import asyncio  # imported when a call is made: listing the backends must not import it

        import aiohttp
        import yarl

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            # No connection cap here: the scheduler decides how many calls are in flight.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
            timeout = aiohttp.ClientTimeout(total=self.opts.http_timeout_s, sock_connect=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers(),
                                                  json_serialize=json.dumps, raise_for_status=False,
                                                  # API calls are stateless; a cookie jar only
                                                  # costs a filtering pass per call
                                                  cookie_jar=aiohttp.DummyCookieJar())
            self._url = yarl.URL(f"{self._base}/chat/completions")
            self._session_loop = loop
        return self._session

    async def _post_aiohttp(self, body: dict[str, Any]) -> Any:
        import asyncio

        import aiohttp

        session = self._aiohttp_session()
        try:
            async with session.post(self._url, data=_dumps(body)) as response:
                raw = await response.read()
                if response.status != 200:
                    raise error_for_status(response.status, error_message(raw), response.headers, backend=self.name,
                                           secret=self._api_key)
        except LLMCallError:
            raise
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise MalformedResponse(f"{self.name}: the connection closed before the whole reply arrived ({type(exc).__name__})") from None
        except asyncio.TimeoutError:
            raise CallTimeout(f"{self.name}: no reply within {self.opts.http_timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise Overloaded(f"{self.name}: cannot connect to {self._base} ({scrub(str(exc), self._api_key)})") from None
        except aiohttp.ClientError as exc:
            raise Overloaded(f"{self.name}: HTTP error {type(exc).__name__}: {scrub(str(exc), self._api_key)}") from None
        try:
            return _loads(raw)
        except ValueError:
            raise malformed(self.name, f"the body is not JSON ({len(raw)} bytes)") from None

    def sdk(self) -> Any:
        """The official AsyncOpenAI client (created on first use, in the running loop)."""
        import asyncio

        import openai

        loop = asyncio.get_running_loop()
        if self._sdk is None or self._sdk_loop is not loop:
            http_client = openai.DefaultAioHttpClient() if self.opts.transport in ("aiohttp", "sdk") else None
            self._sdk = openai.AsyncOpenAI(api_key=self._api_key or "no-key", base_url=self._base, max_retries=0,
                                           timeout=self.opts.http_timeout_s, http_client=http_client)
            self._sdk_loop = loop
        return self._sdk

    def map_sdk_error(self, exc: Exception) -> LLMCallError:
        """The engine error for an exception of the official client."""
        import openai

        return map_sdk_error(openai, exc, backend=self.name, secret=self._api_key, timeout_s=self.opts.http_timeout_s)

    async def _post_sdk(self, body: dict[str, Any]) -> Any:
        try:
            completion = await self.sdk().chat.completions.create(**body)
        except LLMCallError:
            raise
        except Exception as exc:
            raise self.map_sdk_error(exc) from None
        if isinstance(completion, str):  # the client hands back a body it could not parse as-is
            raise malformed(self.name, "the body is not JSON")
        return completion.model_dump()

    async def _send(self, body: dict[str, Any]) -> LLMResponse:
        data = await (self._post_aiohttp(body) if self.opts.transport == "aiohttp" else self._post_sdk(body))
        return self.parse(data)

    # -- the backend interface ------------------------------------------------------------

    async def complete(self, request: LLMRequest, images: ImageStore) -> LLMResponse:
        """One chat completion; replies that miss their schema are re-asked (bounded)."""
        return await complete_with_repair(
            request, lambda messages: self._send(self.payload(request, images, messages)), self.opts.schema_repair_attempts)

    # -- Batch API --------------------------------------------------------------------------

    async def submit_batch(self, items: list[tuple[str, LLMRequest]], images: ImageStore) -> str:
        """Upload the requests as a JSONL file and create a batch; returns its id."""
        lines = [json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                             "body": self.payload(request, images)}) for custom_id, request in items]
        data = ("\n".join(lines) + "\n").encode()
        try:
            client = self.sdk()
            uploaded = await client.files.create(file=("mmat-batch.jsonl", data), purpose="batch")
            batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                completion_window="24h", metadata={"created_by": "mmat"})
        except Exception as exc:
            raise self.map_sdk_error(exc) from None
        return str(batch.id)

    async def batch_state(self, batch_id: str) -> str:
        """``running``, ``ended`` or ``failed``."""
        try:
            batch = await self.sdk().batches.retrieve(batch_id)
        except Exception as exc:
            raise self.map_sdk_error(exc) from None
        if batch.status == "completed" or (batch.status in ("expired", "cancelled") and batch.output_file_id):
            return "ended"
        if batch.status in ("failed", "expired", "cancelled"):
            return "failed"
        return "running"

    async def collect_batch(self, batch_id: str) -> dict[str, LLMResponse | LLMCallError]:
        """Download the output (and error) files and parse each line."""
        results: dict[str, LLMResponse | LLMCallError] = {}
        try:
            client = self.sdk()
            batch = await client.batches.retrieve(batch_id)
            texts = []
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    content = await client.files.content(file_id)
                    texts.append(content.text)
        except Exception as exc:
            raise self.map_sdk_error(exc) from None
        for text in texts:
            for _, item in iter_jsonl(text.splitlines()):
                if isinstance(item, BadLine) or not isinstance(item, dict) or "custom_id" not in item:
                    continue  # a line that names no request answers none
                custom_id = item["custom_id"]
                response = item.get("response") or {}
                status = int(response.get("status_code") or 0)
                if status == 200:
                    try:
                        results[custom_id] = self.parse(response.get("body") or {})
                    except MalformedResponse as exc:
                        results[custom_id] = exc
                else:
                    message = error_message(json.dumps(response.get("body") or item.get("error") or {}))
                    results[custom_id] = error_for_status(status or 500, message, None, backend=self.name, secret=self._api_key)
        return results

    async def aclose(self) -> None:
        """Close the HTTP session and the official client."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
        if self._sdk is not None:
            try:
                await self._sdk.close()
            except Exception:  # closing on a finished loop: nothing left to release
                pass
            self._sdk = None
