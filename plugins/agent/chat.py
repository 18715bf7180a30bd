"""The model the runtime talks to: an OpenAI-compatible endpoint (vLLM, SGLang, ...) or a local
transformers model (with or without a LoRA adapter from ``mmat train``).

Both take a plain dialogue (``{"role", "content"}`` strings) plus image files; the images are
attached to the first user turn, as in training.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from mmat_core.components import LLMRequest, LLMResponse
from mmat_core.errors import ConfigError
from mmat_core.models import ModelCall, Usage

ChatTurn = dict[str, str]


class ChatModel(Protocol):
    """What the agent runtime needs of a model."""

    name: str

    async def generate(self, messages: Sequence[ChatTurn], images: Sequence[Path]) -> str:
        """The model's reply to the dialogue, images attached to the first user turn."""
        ...

    async def aclose(self) -> None:
        """Release connections or memory."""
        ...


def data_url(path: Path) -> str:
    """The image as a ``data:`` URL, the form every OpenAI-compatible server accepts."""
    from mmat_core.images import read_regular_file  # regular files only, size-capped

    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(read_regular_file(path)).decode('ascii')}"


def _first_user(messages: Sequence[ChatTurn]) -> int:
    return next((i for i, m in enumerate(messages) if m["role"] == "user"), -1)


class OpenAIChatModel:
    """A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(self, model: str, base_url: str, *, api_key: str | None = None, max_tokens: int = 1024,
                 temperature: float = 0.0, timeout_s: float = 120.0, max_retries: int = 2) -> None:
        import openai

        self.name = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        # vLLM accepts any key; the client refuses to start without one.
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=max_retries)

    def wire_messages(self, messages: Sequence[ChatTurn], images: Sequence[Path]) -> list[dict[str, Any]]:
        """The messages as sent: the first user turn becomes image parts followed by its text."""
        first = _first_user(messages)
        wire: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            if index == first and images:
                parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_url(p)}} for p in images]
                parts.append({"type": "text", "text": message["content"]})
                wire.append({"role": message["role"], "content": parts})
            else:
                wire.append({"role": message["role"], "content": message["content"]})
        return wire

    async def generate(self, messages: Sequence[ChatTurn], images: Sequence[Path]) -> str:
        """One chat completion (greedy by default)."""
        response = await self._client.chat.completions.create(
            model=self.name,
            messages=self.wire_messages(messages, images),  # type: ignore[arg-type]
            max_tokens=self.max_tokens,
            temperature=self.temperature,
        )
        return response.choices[0].message.content or ""

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


def _has_processor(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"))


class TransformersChatModel:
    """A local ``AutoModelForImageTextToText``; ``path`` may be a model or an ``mmat train`` adapter folder."""

    def __init__(self, path: str, *, adapter: str | None = None, device: str = "auto", max_new_tokens: int = 512) -> None:
        self.path = path
        self.adapter = adapter
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.name = str(adapter or path)
        self._model: Any = None
        self._processor: Any = None
        # One generate at a time: a local model is not re-entrant and would only fight for the device.
        self._lock = threading.Lock()

    def _load(self) -> None:
        import json

        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        base, adapter = self.path, self.adapter
        folder = Path(self.path)
        if adapter is None and (folder / "adapter_config.json").exists():
            adapter = str(folder)
            base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
        try:
            model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype)
            processor_source = adapter if adapter and _has_processor(Path(adapter)) else base
            processor = AutoProcessor.from_pretrained(processor_source)
        except OSError as exc:
            raise ConfigError(f"cannot load model '{base}': {exc}", key="model") from None
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        self._model = model.to(device).eval()
        self._processor = processor
        self._device = device

    def _generate(self, messages: Sequence[ChatTurn], images: Sequence[Path]) -> str:
        import io

        import torch
        from PIL import Image

        from mmat_core.images import read_regular_file

        with self._lock:
            if self._model is None:
                self._load()
            first = _first_user(messages)
            chat = []
            for index, message in enumerate(messages):
                content: list[dict[str, Any]] = [{"type": "image"} for _ in images] if index == first else []
                content.append({"type": "text", "text": message["content"]})
                chat.append({"role": message["role"], "content": content})
            text = self._processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            pictures = [Image.open(io.BytesIO(read_regular_file(p))).convert("RGB") for p in images]
            inputs = self._processor(text=[text], images=pictures or None, return_tensors="pt", add_special_tokens=False)
            inputs = {k: v.to(self._device) for k, v in inputs.items()}
            with torch.inference_mode():
                output = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new_tokens = output[0, inputs["input_ids"].shape[1]:]
            return self._processor.tokenizer.decode(new_tokens, skip_special_tokens=True)

    async def generate(self, messages: Sequence[ChatTurn], images: Sequence[Path]) -> str:
        """Greedy generation off the event loop."""
        return await asyncio.to_thread(self._generate, messages, images)

    async def aclose(self) -> None:
        """Drop the model."""
        self._model = None


#: Where the model behind the agent runs; ``auto``: ``openai`` with an endpoint, else ``transformers``.
BACKENDS = ("auto", "openai", "transformers", "offline")


def open_chat_model(model: str, *, endpoint: str | None = None, adapter: str | None = None, api_key: str | None = None,
                    max_tokens: int = 1024, device: str = "auto", backend: str = "auto") -> ChatModel:
    """An endpoint model when ``endpoint`` is given, else a local transformers model; ``backend``
    names one explicitly (``offline``: the rule-following stand-in of :mod:`mmat_plugins.agent.offline`)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; allowed: {', '.join(BACKENDS)}", key="backend")
    if backend == "offline":
        from mmat_plugins.agent.offline import OfflineChatModel

        return OfflineChatModel()
    if backend == "openai" and not endpoint:
        raise ConfigError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1 for vLLM)", key="base_url")
    if backend == "transformers" and endpoint:
        raise ConfigError("--base-url applies to the openai backend; the transformers backend loads --model locally",
                          key="base_url")
    if endpoint:
        if adapter:
            raise ConfigError("--adapter applies to local models; an endpoint serves its adapter itself (vLLM --lora-modules)", key="adapter")
        return OpenAIChatModel(model, endpoint, api_key=api_key, max_tokens=max_tokens)
    return TransformersChatModel(model, adapter=adapter, device=device, max_new_tokens=max_tokens)


class ChatModelClient:
    """Lets tools that make model calls (``image_caption``) use the runtime's own model.

    Implements :class:`mmat_core.components.LLMClient`: text parts become the turn's text and image
    parts become the attached image files.
    """

    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def complete(self, request: LLMRequest) -> tuple[LLMResponse, ModelCall]:
        """Answer one tool request with the chat model."""
        images: list[Path] = []
        turns: list[ChatTurn] = []
        for message in request.messages:
            if not isinstance(message.content, str):
                images.extend(Path(p.image.path) for p in message.content if p.type == "image" and p.image and p.image.path)
            turns.append({"role": message.role, "content": message.text()})
        started = time.monotonic()
        text = await self.model.generate(turns, images)
        usage = Usage(calls=1, latency_s=time.monotonic() - started)
        call = ModelCall(purpose=request.purpose, backend="runtime", model=self.model.name, usage=usage)
        return LLMResponse(text=text, model=self.model.name, usage=usage), call
