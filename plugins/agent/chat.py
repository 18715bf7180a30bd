"""The model the runtime talks to: an OpenAI-compatible endpoint (vLLM, SGLang, ...) or a local
transformers model (with or without a LoRA adapter from ``mmat train``).

Both take a plain dialogue (``{"role", "content"}`` strings) plus image files; the images are
attached to the first user turn, as in training. :meth:`respond` also takes the generation settings
of one call (:class:`GenerationSettings`: ``mmat serve`` passes a request's ``max_tokens``,
``temperature``, ``top_p``, ``stop`` and ``seed``) and returns the reply with its token counts
(:class:`ChatReply`). A third-party model that only has ``generate`` still works through
:func:`respond`, with its token counts left at 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import mimetypes
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from mmat_core.components import LLMRequest, LLMResponse
from mmat_core.errors import ConfigError
from mmat_core.model_refs import check_model_source
from mmat_core.models import ModelCall, Usage

ChatTurn = dict[str, str]


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings of one model call; ``None`` leaves the model's default (greedy, the
    server's ``--max-tokens``)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: ``each_call``: ``max_tokens`` caps every call of the agent; ``final_answer``: only the call
    #: whose reply is the answer (RR steps then keep the model's default).
    max_tokens_scope: Literal["each_call", "final_answer"] = "each_call"

    def given(self) -> dict[str, Any]:
        """The settings that were set, by their OpenAI names (``stop`` as a list)."""
        values: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature,
                                  "top_p": self.top_p, "stop": list(self.stop) or None, "seed": self.seed}
        return {name: value for name, value in values.items() if value is not None}


DEFAULT_SETTINGS = GenerationSettings()


@dataclass
class ChatReply:
    """A model's reply with the token counts of the call (0 where the model does not say)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


#: The finish reasons an answer reports as they are (OpenAI's); anything else (a backend's own, or
#: none) reads as ``stop``.
PASSED_FINISH_REASONS = ("length", "content_filter")


def finish_reason(reply: ChatReply) -> str:
    """The OpenAI ``finish_reason`` of a reply: ``length`` when it was cut at its token cap,
    ``content_filter`` when the backing server says so, else ``stop``."""
    return reply.finish_reason if reply.finish_reason in PASSED_FINISH_REASONS else "stop"


#: The model calls of the agent run in progress (its own and those of tools such as image_caption),
#: appended by :func:`respond` so the runtime can report each call's figures.
CALL_LOG: contextvars.ContextVar[list[ModelCall] | None] = contextvars.ContextVar("mmat_agent_calls", default=None)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first of the stop sequences (excluded), as OpenAI servers return it."""
    ends = [index for s in stop if s and (index := text.find(s)) >= 0]
    return text[: min(ends)] if ends else text


async def respond(model: ChatModel, messages: Sequence[ChatTurn], images: Sequence[Path],
                  settings: GenerationSettings = DEFAULT_SETTINGS, *, purpose: str = "") -> tuple[ChatReply, ModelCall]:
    """One call of ``model`` with its usage: through its ``respond`` when it has one, else its
    ``generate`` (settings other than ``stop`` then unused, tokens 0). The call is added to the
    running agent's :data:`CALL_LOG`."""
    started = time.monotonic()
    own = getattr(model, "respond", None)
    if own is not None:
        reply: ChatReply = await own(messages, images, settings)
    else:
        reply = ChatReply(cut_at_stop(await model.generate(messages, images), settings.stop))
    usage = Usage(calls=1, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                  latency_s=time.monotonic() - started)
    call = ModelCall(purpose=purpose, backend="runtime", model=model.name, usage=usage)
    log = CALL_LOG.get()
    if log is not None:
        log.append(call)
    return reply, call


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

    async def respond(self, messages: Sequence[ChatTurn], images: Sequence[Path],
                      settings: GenerationSettings = DEFAULT_SETTINGS) -> ChatReply:
        """One chat completion with the server's token counts; unset settings use the model's
        defaults (greedy, ``max_tokens``)."""
        extra: dict[str, Any] = {name: value for name, value in settings.given().items()
                                 if name in ("top_p", "stop", "seed")}
        response = await self._client.chat.completions.create(
            model=self.name,
            messages=self.wire_messages(messages, images),  # type: ignore[arg-type]
            max_tokens=settings.max_tokens or self.max_tokens,
            temperature=self.temperature if settings.temperature is None else settings.temperature,
            **extra,
        )
        choice = response.choices[0]
        usage = response.usage
        return ChatReply(choice.message.content or "", prompt_tokens=usage.prompt_tokens if usage else 0,
                         completion_tokens=usage.completion_tokens if usage else 0, finish_reason=choice.finish_reason)

    async def generate(self, messages: Sequence[ChatTurn], images: Sequence[Path]) -> str:
        """One chat completion (greedy by default)."""
        return (await self.respond(messages, images)).text

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
        check_model_source(base)  # before transformers, which would retry an unreachable Hub for minutes
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

    def _generate(self, messages: Sequence[ChatTurn], images: Sequence[Path], settings: GenerationSettings,
                  cancelled: threading.Event) -> ChatReply:
        import io

        import torch
        from PIL import Image
        from transformers import StoppingCriteria, StoppingCriteriaList

        from mmat_core.images import read_regular_file

        class Cancelled(StoppingCriteria):
            # Stops generating once the caller is gone (a cancelled request), at the next token.
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancelled.is_set()

        with self._lock:
            if cancelled.is_set():
                return ChatReply("")
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
            options: dict[str, Any] = {"max_new_tokens": settings.max_tokens or self.max_new_tokens,
                                       "stopping_criteria": StoppingCriteriaList([Cancelled()])}
            if settings.temperature:  # > 0: sampling; None or 0: greedy, as the OpenAI API reads 0
                options.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p or 1.0)
            else:
                options["do_sample"] = False
            if settings.stop:
                options.update(stop_strings=list(settings.stop), tokenizer=self._processor.tokenizer)
            if settings.seed is not None:
                torch.manual_seed(settings.seed)  # under the lock: no other generate draws in between
            with torch.inference_mode():
                output = self._model.generate(**inputs, **options)
            new_tokens = output[0, inputs["input_ids"].shape[1]:]
            reply = self._processor.tokenizer.decode(new_tokens, skip_special_tokens=True)
            text = cut_at_stop(reply, settings.stop)
            # Cut by the cap: as many tokens as allowed, the last not an end-of-sequence token and
            # no stop sequence reached (generate stops there too, and says nothing of why).
            capped = (len(new_tokens) >= options["max_new_tokens"] and int(new_tokens[-1]) not in self._eos_ids()
                      and text == reply)
            return ChatReply(text, prompt_tokens=int(inputs["input_ids"].shape[1]),
                             completion_tokens=len(new_tokens), finish_reason="length" if capped else "stop")

    def _eos_ids(self) -> set[int]:
        """The model's end-of-sequence token ids (its generation config's, else the tokenizer's)."""
        config = getattr(self._model, "generation_config", None)
        ids = getattr(config, "eos_token_id", None)
        if ids is None:
            ids = self._processor.tokenizer.eos_token_id
        return {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids]) if i is not None}

    async def respond(self, messages: Sequence[ChatTurn], images: Sequence[Path],
                      settings: GenerationSettings = DEFAULT_SETTINGS) -> ChatReply:
        """Generation off the event loop (greedy unless ``settings.temperature`` > 0), with the
        prompt's and the reply's token counts. A cancelled caller stops the generation at the next token."""
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(self._generate, messages, images, settings, cancelled)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def generate(self, messages: Sequence[ChatTurn], images: Sequence[Path]) -> str:
        """Greedy generation off the event loop."""
        return (await self.respond(messages, images)).text

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
    # A model that cannot be found fails here, at once, not after minutes of Hub retries at the
    # first question (mmat serve would already be listening by then).
    check_model_source(model)
    if adapter:
        check_model_source(adapter, key="adapter")
    return TransformersChatModel(model, adapter=adapter, device=device, max_new_tokens=max_tokens)


class ChatModelClient:
    """Lets tools that make model calls (``image_caption``) use the runtime's own model.

    Implements :class:`mmat_core.components.LLMClient`: text parts become the turn's text and image
    parts become the attached image files.
    """

    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def complete(self, request: LLMRequest) -> tuple[LLMResponse, ModelCall]:
        """Answer one tool request with the chat model (the request's own ``max_tokens`` and
        ``temperature``, not those of the question being answered)."""
        images: list[Path] = []
        turns: list[ChatTurn] = []
        for message in request.messages:
            if not isinstance(message.content, str):
                images.extend(Path(p.image.path) for p in message.content if p.type == "image" and p.image and p.image.path)
            turns.append({"role": message.role, "content": message.text()})
        settings = GenerationSettings(max_tokens=request.max_tokens, temperature=request.temperature)
        reply, call = await respond(self.model, turns, images, settings, purpose=request.purpose)
        return LLMResponse(text=reply.text, model=self.model.name, usage=call.usage,
                           finish_reason=reply.finish_reason), call
