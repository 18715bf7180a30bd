"""A scripted fake VLM on 127.0.0.1 speaking the OpenAI chat-completions protocol.

It plays the generator of the rationale loop. Each sample gets a script, found by a key (a
string such as the sample's question) that occurs in the request's text: the sequence of replies
to its rationale-step requests (valid steps, malformed JSON, a leak, HTTP faults), the scene graph
and caption that ``image_caption`` asks for, and the bare final answer. It is a real HTTP server
(aiohttp in a background thread with its own event loop), so real clients talk to it over a
socket, and it records every request so a test can assert the exact dialogue produced.

::

    with FakeVLM() as vlm:
        vlm.script("How many apples?", [step("Count them.", ["ocr"]), step("Done.", final=True)], answer="3")
        ...  # point an OpenAI-compatible backend at vlm.base_url
        dialogue = vlm.dialogue("How many apples?")   # the final request's messages

Samples without a script follow ``default_steps`` (a plain protocol follower), which is what the
loop benchmark uses.

``FakeVLM(protocol="rr")`` plays a *tuned* model instead, for the agent runtime and ``mmat serve``:
the same scripted steps are written in the RR tags (``<THOUGHT>..</THOUGHT><OPERATOR>ocr</OPERATOR>
<RAG>..</RAG><SIGNAL>continue</SIGNAL>``), an ORR request (ORR system prompt) gets
``<THOUGHT>..</THOUGHT><ANSWER>The answer is: ANSWER</ANSWER>`` (purpose ``orr_answer``) and a
plain request (no system message) gets the bare answer (purpose ``plain_answer``). ``python -m tests.fakes.vlm_server --latency 0.2`` serves in its own process
and prints ``LISTENING <port>``.

Each recorded request keeps the generation settings it carried (``params``) and the usage the fake
answered with (``prompt_tokens``, ``completion_tokens``: a deterministic estimate, a quarter of
the characters). ``FakeVLM(honour_max_tokens=True)`` cuts a reply longer than the request's
``max_tokens`` (``max_completion_tokens``) to that many estimated tokens and answers it with
``finish_reason: "length"``, as a real server does; by default replies are whole and ``"stop"``.
``vlm.hold(key)`` makes the requests of a sample wait (after being recorded)
until ``vlm.release(key)``: a model that is still thinking, for tests of clients that leave.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FINAL_PREFIX = "Based on the above information"
SCENE_GRAPH_MARK = "Build a scene graph"
CAPTION_MARK = "Using this scene graph"


def step(thought: str, operators: Sequence[Any] = (), rag: str | None = None, *, final: bool = False) -> dict[str, Any]:
    """One valid step object as the generator writes it."""
    return {
        "thought": thought,
        "operators": list(operators),
        "rag": {"needed": rag is not None, "query": rag},
        "next_action": "final_answer" if final else "continue",
    }


@dataclass
class Fault:
    """Answer one request with an HTTP error instead of a reply."""

    status: int = 500
    retry_after: float | None = None


@dataclass
class Script:
    """What the fake answers for one sample."""

    steps: list[dict[str, Any] | str | Fault]
    answer: str
    scene_graph: dict[str, Any] | str = field(default_factory=lambda: {"objects": [], "attributes": [], "relationships": []})
    caption: str = "A picture."
    cursor: int = 0


@dataclass
class Recorded:
    """One request the fake saw."""

    key: str | None
    purpose: str
    model: str
    messages: list[dict[str, Any]]
    images: int
    status: int
    reply: str
    #: Generation settings the request carried (max_tokens, temperature, top_p, stop, seed; absent ones left out).
    params: dict[str, Any] = field(default_factory=dict)
    #: The usage figures the fake answered with (0 for a fault).
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: ``length`` when the reply was cut at the request's max_tokens (``honour_max_tokens``), else ``stop``.
    finish_reason: str = "stop"


def _text_of(content: Any) -> tuple[str, int]:
    """The text of an OpenAI message content and the number of images in it."""
    if isinstance(content, str):
        return content, 0
    texts, images = [], 0
    for part in content or []:
        if part.get("type") == "text":
            texts.append(part.get("text", ""))
        elif part.get("type") == "image_url":
            images += 1
    return "".join(texts), images


def rr_text(reply: dict[str, Any]) -> str:
    """A step object written in the RR tags a tuned model replies with."""
    names = [op if isinstance(op, str) else op.get("name", "") for op in reply.get("operators", [])]
    rag = reply.get("rag") or {}
    text = f"<THOUGHT>{reply.get('thought', '')}</THOUGHT>"
    if names:
        text += f"<OPERATOR>{', '.join(names)}</OPERATOR>"
    if rag.get("needed") and rag.get("query"):
        text += f"<RAG>{rag['query']}</RAG>"
    signal = "end" if reply.get("next_action") == "final_answer" else reply.get("signal", "continue")
    return text + f"<SIGNAL>{signal}</SIGNAL>"


ORR_SYSTEM_MARK = "<ANSWER>The answer is:"
#: Request fields recorded as a request's generation settings.
GENERATION_PARAMS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed")
#: Where :meth:`FakeVLM.answer` notes, in the request body it was given, that it cut the reply.
FINISH_KEY = "_fake_finish_reason"


def usage_of(body: dict[str, Any], reply: str) -> tuple[int, int]:
    """(prompt, completion) tokens the fake reports: a quarter of the characters, at least 1 each."""
    prompt = sum(len(m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content")))
                 for m in body.get("messages", [])) // 4
    return max(1, prompt), max(1, len(reply) // 4)
PROTOCOLS = ("steps", "rr")


DEFAULT_STEPS: list[dict[str, Any]] = [
    step("The question needs a careful look at the image; nothing outside it is required."),
    step("The observations so far settle the question, so the reasoning is complete.", final=True),
]


class FakeVLM:
    """The scripted fake (see the module docstring)."""

    def __init__(self, *, latency: float = 0.0, default_steps: list[dict[str, Any]] | None = None,
                 default_answer: str = "unknown", port: int = 0, protocol: str = "steps",
                 honour_max_tokens: bool = False) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}")
        self.protocol = protocol
        self.honour_max_tokens = honour_max_tokens
        self.latency = latency
        self.default_steps = default_steps or DEFAULT_STEPS
        self.default_answer = default_answer
        self.scripts: dict[str, Script] = {}
        self.requests: list[Recorded] = []
        self.completions = 0
        self._port = port
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._ready = threading.Event()
        self._ids = itertools.count(1)
        self._holds: dict[str, threading.Event] = {}

    # -- scripting -------------------------------------------------------------------------------

    def script(self, key: str, steps: Sequence[dict[str, Any] | str | Fault], *, answer: str,
               scene_graph: dict[str, Any] | str | None = None, caption: str = "A picture.") -> None:
        """Script the sample whose requests contain ``key``."""
        self.scripts[key] = Script(list(steps), answer, scene_graph if scene_graph is not None else
                                   {"objects": [], "attributes": [], "relationships": []}, caption)

    def hold(self, key: str) -> None:
        """Make the requests of the sample ``key`` wait, once recorded, until :meth:`release`."""
        self._holds[key] = threading.Event()

    def release(self, key: str) -> None:
        """Let the held requests of ``key`` (and later ones) answer."""
        event = self._holds.pop(key, None)
        if event is not None:
            event.set()

    def recorded(self, key: str, purpose: str | None = None) -> list[Recorded]:
        """Requests of one scripted sample (optionally of one purpose), in arrival order."""
        return [r for r in self.requests if r.key == key and (purpose is None or r.purpose == purpose)]

    def dialogue(self, key: str) -> list[tuple[str, str]]:
        """(role, text) of every message of the sample's final-answer request, plus the answer."""
        final = self.recorded(key, "final_answer")[-1]
        return [(m["role"], m["text"]) for m in final.messages] + [("assistant", final.reply)]

    # -- answering -------------------------------------------------------------------------------

    def _find(self, text: str) -> str | None:
        return next((key for key in self.scripts if key in text), None)

    def answer(self, body: dict[str, Any]) -> tuple[int, str, dict[str, Any], str | None, str]:
        """(status, reply text, extra headers, script key, purpose) for one request body."""
        messages = []
        images = 0
        for message in body.get("messages", []):
            text, count = _text_of(message.get("content"))
            images += count
            messages.append({"role": message.get("role"), "text": text})
        everything = "\n".join(m["text"] for m in messages)
        last_user = next((m["text"] for m in reversed(messages) if m["role"] == "user"), "")
        key = self._find(everything)
        script = self.scripts.get(key) if key else None
        system = next((m["text"] for m in messages if m["role"] == "system"), None)
        if self.protocol == "rr" and system is not None and ORR_SYSTEM_MARK in system:
            purpose = "orr_answer"
            answer = script.answer if script else self.default_answer
            reply: Any = f"<THOUGHT>The operator outputs settle it.</THOUGHT><ANSWER>The answer is: {answer}</ANSWER>"
        elif self.protocol == "rr" and system is None and not (SCENE_GRAPH_MARK in last_user or CAPTION_MARK in last_user):
            purpose = "plain_answer"
            reply = script.answer if script else self.default_answer
        elif last_user.startswith(FINAL_PREFIX):
            purpose = "final_answer"
            reply = script.answer if script else self.default_answer
        elif SCENE_GRAPH_MARK in last_user:
            purpose = "scene_graph"
            reply = script.scene_graph if script else {"objects": ["object"], "attributes": [], "relationships": []}
        elif CAPTION_MARK in last_user:
            purpose = "caption"
            reply = script.caption if script else "A picture."
        else:
            purpose = "rationale_step"
            if script is not None:
                with self._lock:
                    index = script.cursor
                    script.cursor += 1
                reply = script.steps[index] if index < len(script.steps) else step("(script exhausted)", final=True)
            else:
                # Stateless for unscripted samples: the step number is the number of assistant turns.
                turn = sum(1 for m in messages if m["role"] == "assistant")
                reply = self.default_steps[min(turn, len(self.default_steps) - 1)]
            if self.protocol == "rr" and isinstance(reply, dict):
                reply = rr_text(reply)
        status, headers = 200, {}
        if isinstance(reply, Fault):
            status = reply.status
            if reply.retry_after is not None:
                headers["retry-after"] = str(reply.retry_after)
            text = json.dumps({"error": {"message": "scripted fault", "type": "server_error"}})
        else:
            text = reply if isinstance(reply, str) else json.dumps(reply)
        params = {name: body[name] for name in GENERATION_PARAMS if body.get(name) is not None}
        finish = "stop"
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if status == 200 and self.honour_max_tokens and isinstance(cap, int) and len(text) // 4 > cap:
            text, finish = text[: cap * 4], "length"
            body[FINISH_KEY] = finish  # for _handle, which answers with this body's reply
        prompt, completion = usage_of(body, text) if status == 200 else (0, 0)
        with self._lock:
            self.requests.append(Recorded(key, purpose, str(body.get("model", "")), messages, images, status,
                                          text if status == 200 else "", params, prompt, completion, finish))
            self.completions += 1
        return status, text, headers, key, purpose

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        status, text, headers, key, _ = self.answer(body)
        held = self._holds.get(key) if key is not None else None
        if held is not None:
            await asyncio.get_running_loop().run_in_executor(None, held.wait, 60)
        if self.latency:
            await asyncio.sleep(self.latency)
        if status != 200:
            return web.Response(status=status, text=text, content_type="application/json", headers=headers)
        prompt, completion = usage_of(body, text)
        payload = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-vlm"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": body.get(FINISH_KEY, "stop")}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        return web.json_response(payload)

    async def _stats(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"completions": self.completions})

    # -- lifecycle -------------------------------------------------------------------------------

    async def _start(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/_stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, backlog=1024)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> FakeVLM:
        """Start serving in a background thread."""
        self._thread = threading.Thread(target=self._serve, name="fake-vlm", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake VLM did not start")
        return self

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is None:
            return
        for key in list(self._holds):
            self.release(key)
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self._port}/v1"

    def __enter__(self) -> FakeVLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpxChatBackend:
    """A minimal OpenAI-compatible chat backend over ``httpx`` (a real HTTP client).

    Used by the loop tests and benchmark only while the project's own ``openai`` backend plugin
    is not installed; :func:`vlm_backend` prefers the real one.
    """

    def __new__(cls, base_url: str, model: str = "fake-vlm") -> Any:
        from mmat_core.components import LLMBackend, LLMRequest, LLMResponse
        from mmat_core.engine.errors import Overloaded, PermanentError, RateLimited
        from mmat_core.models import Usage

        class _Backend(LLMBackend):
            name = "httpx-chat"
            version = "test"

            def __init__(self) -> None:
                super().__init__()
                self._client: Any = None

            @property
            def model(self) -> str:
                return model

            async def complete(self, request: LLMRequest, images: Any) -> LLMResponse:
                import base64

                import httpx

                if self._client is None:
                    self._client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1024))
                messages = []
                for message in request.messages:
                    if isinstance(message.content, str):
                        messages.append({"role": message.role, "content": message.content})
                        continue
                    parts = []
                    for part in message.content:
                        if part.type == "image" and part.image is not None:
                            data = base64.b64encode(images.load(part.image)).decode()
                            parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
                        else:
                            parts.append({"type": "text", "text": part.text or ""})
                    messages.append({"role": message.role, "content": parts})
                body = {"model": model, "messages": messages}
                if request.max_tokens:
                    body["max_tokens"] = request.max_tokens
                response = await self._client.post(f"{base_url}/chat/completions", json=body)
                if response.status_code == 429:
                    raise RateLimited("429", retry_after=float(response.headers.get("retry-after", 0)) or None, status=429)
                if response.status_code >= 500:
                    raise Overloaded(f"HTTP {response.status_code}", status=response.status_code)
                if response.status_code != 200:
                    raise PermanentError(f"HTTP {response.status_code}", status=response.status_code)
                data = response.json()
                usage = data.get("usage") or {}
                return LLMResponse(text=data["choices"][0]["message"]["content"], model=data.get("model", model),
                                   usage=Usage(prompt_tokens=usage.get("prompt_tokens", 0),
                                               completion_tokens=usage.get("completion_tokens", 0)),
                                   finish_reason=data["choices"][0].get("finish_reason"))

            async def aclose(self) -> None:
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None

        return _Backend()


def vlm_backend(base_url: str, model: str = "fake-vlm") -> Any:
    """An LLM backend pointed at the fake: the project's ``openai`` plugin when it is installed,
    else :class:`HttpxChatBackend`."""
    import os

    from mmat_core.errors import ConfigError
    from mmat_core.plugins import get_plugin_manager

    try:
        cls = get_plugin_manager().get("llm", "openai")
    except ConfigError:
        return HttpxChatBackend(base_url, model)
    os.environ.setdefault("MMAT_FAKE_VLM_KEY", "test-key")
    fields = cls.Options.model_fields
    options: dict[str, Any] = {"base_url": base_url, "model": model}
    for name in ("api_key_env", "api_key_var", "key_env"):
        if name in fields:
            options[name] = "MMAT_FAKE_VLM_KEY"
            break
    if "schema_repair_attempts" in fields:
        # The rationale loop repairs malformed steps itself; the tests assert exactly that exchange.
        options["schema_repair_attempts"] = 0
    return cls(cls.Options(**options))


def main() -> None:
    """Serve in this process until killed (the benchmark runs the fake apart from the client)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="steps",
                        help="steps: the rationale loop's generator; rr: a tuned model (for mmat serve / infer)")
    parser.add_argument("--operators", default="",
                        help="comma-separated operators the first default step asks for (e.g. ocr); none by default")
    args = parser.parse_args()
    operators = [name for name in args.operators.split(",") if name]
    steps = [step("Read what the image shows.", operators), DEFAULT_STEPS[1]] if operators else None
    vlm = FakeVLM(latency=args.latency, port=args.port, protocol=args.protocol, default_steps=steps).start()
    print(f"LISTENING {vlm.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        vlm.stop()


if __name__ == "__main__":
    main()
