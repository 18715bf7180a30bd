"""The ``anthropic`` backend: Claude models through the official ``anthropic`` client.

The client runs on its aiohttp transport (``DefaultAioHttpClient``) unless ``transport: httpx``
asks for its default ``httpx2`` one; its own retries are off because mmat's scheduler retries.
Images go as base64 image blocks. Structured output uses tool use: the response schema becomes
the input schema of a single forced tool, and the tool call's input is the reply. Without it
(``structured_output: none``) replies are validated against the schema and re-asked up to
``schema_repair_attempts`` times. Message Batches are supported for batch mode.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from mmat_core.components import ComponentOptions, LLMBackend, LLMRequest, LLMResponse, Message
from mmat_core.engine.errors import BatchFailed, LLMCallError, Overloaded, PermanentError, RateLimited, scrub
from mmat_core.images import ImageStore
from mmat_core.models import Usage
from mmat_plugins.llms.common import (
    ImageEncoder,
    api_key_from_env,
    complete_with_repair,
    malformed,
    map_sdk_error,
)

if TYPE_CHECKING:
    import asyncio

#: Name of the forced tool that carries structured replies.
REPLY_TOOL = "reply"


class AnthropicOptions(ComponentOptions):
    """Options of the anthropic backend."""

    model: str = Field("claude-sonnet-4-5", description="model name")
    base_url: str | None = Field(None, description="API root; default: Anthropic's")
    api_key_env: str | None = Field("ANTHROPIC_API_KEY", description="environment variable holding the key")
    transport: Literal["aiohttp", "httpx"] = Field("aiohttp", description="HTTP transport of the official client")
    structured_output: Literal["tool", "none"] = Field("tool", description="how a response schema is enforced")
    schema_repair_attempts: int = Field(1, ge=0, le=5, description="re-asks when a reply does not match its schema")
    default_max_tokens: int = Field(1024, ge=1, description="max_tokens when the request sets none (the API requires one)")
    http_timeout_s: float = Field(600.0, gt=0, description="HTTP-level timeout")


class AnthropicBackend(LLMBackend):
    """Anthropic Messages API, multimodal, with tool-use structured output and Message Batches."""

    name = "anthropic"
    version = "1"
    answer_options = ("base_url", "structured_output", "default_max_tokens")
    description = "Anthropic Claude models via the official client (Messages and Message Batches)"
    Options = AnthropicOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._api_key = api_key_from_env(self.opts.api_key_env, self.name)
        self._encoder = ImageEncoder()
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def opts(self) -> AnthropicOptions:
        """The typed options."""
        return self.options  # type: ignore[return-value]

    def client(self) -> Any:
        """The official AsyncAnthropic client (created on first use, in the running loop)."""
        import asyncio  # imported when a call is made: listing the backends must not import it

        import anthropic

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            http_client = anthropic.DefaultAioHttpClient() if self.opts.transport == "aiohttp" else None
            self._client = anthropic.AsyncAnthropic(api_key=self._api_key or "no-key", base_url=self.opts.base_url,
                                                    max_retries=0, timeout=self.opts.http_timeout_s, http_client=http_client)
            self._client_loop = loop
        return self._client

    # -- request body ---------------------------------------------------------------------

    def params(self, request: LLMRequest, images: ImageStore, messages: list[Message] | None = None) -> dict[str, Any]:
        """The Messages API parameters: system prompt apart, images as base64 blocks."""
        system: list[str] = []
        wire: list[dict[str, Any]] = []
        for message in messages or request.messages:
            if message.role == "system":
                system.append(message.text())
                continue
            if isinstance(message.content, str):
                wire.append({"role": message.role, "content": message.content})
                continue
            blocks: list[dict[str, Any]] = []
            for part in message.content:
                if part.type == "image" and part.image is not None:
                    mime, data = self._encoder.encode(part.image, images)
                    blocks.append({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}})
                else:
                    blocks.append({"type": "text", "text": part.text or ""})
            wire.append({"role": message.role, "content": blocks})
        params: dict[str, Any] = {"model": self.opts.model, "messages": wire,
                                  "max_tokens": request.max_tokens or self.opts.default_max_tokens}
        if system:
            params["system"] = "\n\n".join(system)
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.response_schema is not None and self.opts.structured_output == "tool":
            params["tools"] = [{"name": REPLY_TOOL, "description": "Give your reply as this tool's input.",
                                "input_schema": request.response_schema}]
            params["tool_choice"] = {"type": "tool", "name": REPLY_TOOL}
        return params

    def parse(self, message: Any) -> LLMResponse:
        """An LLMResponse from a Message (object or dict); a forced tool call's input becomes the text."""
        data = message if isinstance(message, dict) else message.model_dump()
        try:
            blocks = data["content"]
            tool = next((b for b in blocks if b.get("type") == "tool_use"), None)
            text = json.dumps(tool["input"], ensure_ascii=False) if tool else "".join(
                b.get("text", "") for b in blocks if b.get("type") == "text")
            usage = data.get("usage") or {}
            return LLMResponse(text=text, model=data.get("model") or self.opts.model,
                               usage=Usage(prompt_tokens=int(usage.get("input_tokens") or 0),
                                           completion_tokens=int(usage.get("output_tokens") or 0)),
                               finish_reason=data.get("stop_reason"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise malformed(self.name, f"no content blocks in the reply ({type(exc).__name__})") from None

    def map_error(self, exc: Exception) -> LLMCallError:
        """The engine error for an exception of the official client."""
        import anthropic

        return map_sdk_error(anthropic, exc, backend=self.name, secret=self._api_key, timeout_s=self.opts.http_timeout_s)

    async def _send(self, params: dict[str, Any]) -> LLMResponse:
        try:
            message = await self.client().messages.create(**params)
        except Exception as exc:
            raise self.map_error(exc) from None
        if isinstance(message, str):
            raise malformed(self.name, "the body is not JSON")
        return self.parse(message)

    # -- the backend interface ------------------------------------------------------------

    async def complete(self, request: LLMRequest, images: ImageStore) -> LLMResponse:
        """One message; replies that miss their schema are re-asked (bounded)."""
        return await complete_with_repair(
            request, lambda messages: self._send(self.params(request, images, messages)), self.opts.schema_repair_attempts)

    # -- Message Batches ------------------------------------------------------------------

    async def submit_batch(self, items: list[tuple[str, LLMRequest]], images: ImageStore) -> str:
        """Create a message batch; returns its id."""
        requests = [{"custom_id": custom_id, "params": self.params(request, images)} for custom_id, request in items]
        try:
            batch = await self.client().messages.batches.create(requests=requests)
        except Exception as exc:
            raise self.map_error(exc) from None
        return str(batch.id)

    async def batch_state(self, batch_id: str) -> str:
        """``running`` or ``ended``."""
        try:
            batch = await self.client().messages.batches.retrieve(batch_id)
        except Exception as exc:
            raise self.map_error(exc) from None
        return "ended" if batch.processing_status == "ended" else "running"

    async def collect_batch(self, batch_id: str) -> dict[str, LLMResponse | LLMCallError]:
        """Read the results file: succeeded entries become responses, the rest errors."""
        results: dict[str, LLMResponse | LLMCallError] = {}
        try:
            async for entry in await self.client().messages.batches.results(batch_id):
                result = entry.result
                if result.type == "succeeded":
                    results[entry.custom_id] = self.parse(result.message)
                elif result.type == "errored":
                    error = result.error.model_dump() if hasattr(result.error, "model_dump") else dict(result.error)
                    inner = error.get("error") or error
                    kind, message = inner.get("type", ""), scrub(str(inner.get("message", "")), self._api_key)
                    if kind == "rate_limit_error":
                        results[entry.custom_id] = RateLimited(f"{self.name}: {message}")
                    elif kind in ("overloaded_error", "api_error"):
                        results[entry.custom_id] = Overloaded(f"{self.name}: {kind}: {message}")
                    else:
                        results[entry.custom_id] = PermanentError(f"{self.name}: {kind}: {message}")
                else:
                    results[entry.custom_id] = BatchFailed(f"{self.name}: batch request {result.type}")
        except LLMCallError:
            raise
        except Exception as exc:
            raise self.map_error(exc) from None
        return results

    async def aclose(self) -> None:
        """Close the official client."""
        if self._client is not None:
            try:
                await self._client.close()
            except Exception:  # closing on a finished loop: nothing left to release
                pass
            self._client = None
