"""A scriptable fake of the OpenAI HTTP API on 127.0.0.1, for tests and benchmarks.

It is a real HTTP server (aiohttp) running in a background thread with its own event loop, so
the real ``openai`` client, ``httpx`` or ``aiohttp`` talk to it over a real socket. Nothing in it
reaches the internet.

Endpoints
---------
``POST /v1/chat/completions``
    Answers a chat completion (non-streaming).
``POST /v1/files``, ``GET /v1/files/{id}/content``
    File upload (multipart, ``purpose=batch``) and download, for the Batch API.
``POST /v1/batches``, ``GET /v1/batches/{id}``
    The Batch API. A batch stays ``in_progress`` for ``batch_polls_to_finish`` polls (or for ever
    while ``hold_batches`` is true), then every line is answered by the same reply logic as a
    live request and the batch is ``completed`` with an output file.
``GET /_stats``
    Counters as JSON (requests seen, 200s answered per request text): the benchmark reads it
    from another process.

Scripting replies
-----------------
Each incoming completion takes the next reply from ``server.queue(...)``; when the queue is empty
``server.responder(request) -> Reply`` is called (the default echoes the last user text)::

    with FakeOpenAIServer() as server:
        server.queue(Reply.rate_limited(retry_after=0.2), Reply.text("hello"))
        client = AsyncOpenAI(base_url=server.base_url, api_key="test-key")
        ...
        assert [r.status for r in server.requests] == [429, 200]

Replies (all accept ``latency=seconds``):

- ``Reply.text(text, prompt_tokens=None, completion_tokens=None)``: a normal answer.
- ``Reply.json(obj)``: a structured answer (the text is the JSON; Anthropic's fake answers a
  ``tool_use`` block when the request offered tools).
- ``Reply.status(code, message="...", retry_after=None)``: an API error with a JSON error body;
  ``Reply.rate_limited(retry_after)`` (429), ``Reply.server_error()`` (500) and
  ``Reply.overloaded()`` (529) are shorthands.
- ``Reply.hang()``: accept the request and never answer (until the client gives up or the
  server stops).
- ``Reply.malformed()``: status 200 with a body that is not JSON.
- ``Reply.truncated()``: status 200 whose connection closes half-way through the body.

Server-wide knobs: ``latency`` (seconds before every reply), ``fault_rate`` and ``fault`` (answer
that fraction of requests, chosen by a seeded RNG, with ``fault`` instead), ``hold_batches``,
``batch_polls_to_finish``.

Recording
---------
``server.requests`` lists a :class:`RecordedRequest` for every request seen (method, path,
headers (names lower-cased), parsed JSON body, status answered), in arrival order. ``server.completions()`` keeps
only model calls.

Running in another process
--------------------------
``python -m tests.fakes.openai_server --port 0 --latency 0.2 --fault-rate 0.1`` prints
``LISTENING <port>`` and serves until killed (used by ``bench/throughput.py`` so the server's CPU
is not counted against the client's).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """One scripted answer of the fake server."""

    kind: str = "text"
    text: str = ""
    data: Any = None
    status_code: int = 200
    message: str = ""
    retry_after: float | None = None
    latency: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def text_reply(cls, text: str, **kw: Any) -> Reply:
        """A normal answer with ``text``."""
        return cls(kind="text", text=text, **kw)

    @classmethod
    def json(cls, obj: Any, **kw: Any) -> Reply:
        """A structured answer carrying ``obj``."""
        return cls(kind="json", data=obj, text=json.dumps(obj), **kw)

    @classmethod
    def status(cls, code: int, message: str = "scripted error", retry_after: float | None = None, **kw: Any) -> Reply:
        """An HTTP error with a JSON error body (and Retry-After when given)."""
        return cls(kind="error", status_code=code, message=message, retry_after=retry_after, **kw)

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1.0, **kw: Any) -> Reply:
        """HTTP 429 with Retry-After."""
        return cls.status(429, "Rate limit reached", retry_after=retry_after, **kw)

    @classmethod
    def server_error(cls, **kw: Any) -> Reply:
        """HTTP 500."""
        return cls.status(500, "The server had an error", **kw)

    @classmethod
    def overloaded(cls, **kw: Any) -> Reply:
        """HTTP 529 (Anthropic's 'overloaded')."""
        return cls.status(529, "Overloaded", **kw)

    @classmethod
    def hang(cls) -> Reply:
        """Never answer."""
        return cls(kind="hang")

    @classmethod
    def malformed(cls, **kw: Any) -> Reply:
        """200 with a body that is not JSON."""
        return cls(kind="malformed", **kw)

    @classmethod
    def truncated(cls, **kw: Any) -> Reply:
        """200 whose body stops half-way (the connection closes)."""
        return cls(kind="truncated", **kw)


# ``Reply.text(...)`` reads best in tests, but a classmethod cannot share its name with the dataclass
# field: bind it after the class body (instances still carry their own ``text`` string).
Reply.text = Reply.text_reply  # type: ignore[assignment,method-assign]


@dataclass
class RecordedRequest:
    """What the server saw of one request."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received: float
    status: int | None = None

    def user_text(self) -> str:
        """The text of the last user message of a chat request ('' otherwise)."""
        if not isinstance(self.body, dict):
            return ""
        return last_user_text(self.body.get("messages") or [])


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text parts of the last user message (OpenAI or Anthropic layout)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content or [] if part.get("type") == "text")
    return ""


class ScriptedServer:
    """The machinery both fakes share: a thread, a reply queue, fault injection, recording."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0, seed: int = 0,
                 record_bodies: bool = True) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.fault_rate = 0.0
        self.fault: Reply = Reply.rate_limited(retry_after=0.05)
        self.responder: Callable[[RecordedRequest], Reply] = self.default_reply
        self.requests: list[RecordedRequest] = []
        self.record_bodies = record_bodies
        self.hold_batches = False
        self.batch_polls_to_finish = 1
        self.ok_by_text: Counter[str] = Counter()
        self._queue: deque[Reply] = deque()
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    # -- scripting --------------------------------------------------------------------------

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        self._queue.extend(replies)

    def default_reply(self, request: RecordedRequest) -> Reply:
        """Echo the last user text."""
        return Reply.text(f"echo: {request.user_text()}")  # type: ignore[call-arg]

    def next_reply(self, request: RecordedRequest) -> Reply:
        """The queued reply, a random fault, or the responder's answer."""
        if self._queue:
            return self._queue.popleft()
        if self.fault_rate and self._rng.random() < self.fault_rate:
            return self.fault
        return self.responder(request)

    def completions(self) -> list[RecordedRequest]:
        """Recorded model calls (not batch or file endpoints)."""
        return [r for r in self.requests if r.path.endswith(self.completion_path)]

    completion_path = "/chat/completions"

    @property
    def base_url(self) -> str:
        """The API base URL clients are given."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """``http://host:port`` (Anthropic's client takes the root)."""
        return f"http://{self.host}:{self.port}"

    def new_id(self, prefix: str) -> str:
        """A fresh object id."""
        return f"{prefix}{next(self._ids)}"

    # -- HTTP plumbing ----------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """The API's routes (subclasses add theirs)."""
        return [web.get("/_stats", self._stats)]

    async def _stats(self, request: web.Request) -> web.Response:
        statuses = Counter(r.status for r in self.requests)
        return web.json_response({
            "requests": len(self.requests),
            "statuses": {str(k): v for k, v in statuses.items()},
            "ok_by_text_max": max(self.ok_by_text.values(), default=0),
            "ok_texts": len(self.ok_by_text),
        })

    #: The batch object's key that says whether it is still running (the two APIs name it differently).
    batch_state_key = "status"

    async def _get_batch(self, request: web.Request) -> web.Response:
        """Poll a batch: it finishes after ``batch_polls_to_finish`` polls unless ``hold_batches``.
        Subclasses provide ``error_body``, ``_finish_batch`` and ``_batch_object``."""
        recorded = await self.record(request)
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            recorded.status = 404
            return web.json_response(self.error_body(Reply.status(404, "No such batch")), status=404)  # type: ignore[attr-defined]
        batch["_polls"] += 1
        running = batch[self.batch_state_key] == "in_progress"
        if running and not self.hold_batches and batch["_polls"] >= self.batch_polls_to_finish:
            self._finish_batch(batch)  # type: ignore[attr-defined]
        recorded.status = 200
        return web.json_response(self._batch_object(batch))  # type: ignore[attr-defined]

    async def record(self, request: web.Request) -> RecordedRequest:
        """Parse and record an incoming request."""
        body: Any = None
        if request.content_type == "application/json":
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()} if self.record_bodies else {},
            body=body,
            received=time.monotonic(),
        )
        self.requests.append(recorded)
        return recorded

    async def wait_latency(self, reply: Reply) -> None:
        """Sleep the server-wide and the reply's own latency."""
        delay = self.latency + reply.latency
        if delay > 0:
            await asyncio.sleep(delay)

    async def send(self, request: web.Request, recorded: RecordedRequest, reply: Reply,
                   ok_body: Callable[[Reply], dict[str, Any]], error_body: Callable[[Reply], dict[str, Any]]) -> web.StreamResponse:
        """Turn a scripted reply into an HTTP answer."""
        await self.wait_latency(reply)
        if reply.kind == "hang":
            recorded.status = 0
            assert self._stopping is not None
            # Wait until the client gives up (its socket closes) or the server stops.
            while not self._stopping.is_set():
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.02)
            raise asyncio.CancelledError()
        if reply.kind == "error":
            recorded.status = reply.status_code
            headers = {}
            if reply.retry_after is not None:
                headers["Retry-After"] = f"{reply.retry_after:g}"
                headers["retry-after-ms"] = str(int(reply.retry_after * 1000))
            return web.json_response(error_body(reply), status=reply.status_code, headers=headers)
        if reply.kind == "malformed":
            recorded.status = 200
            return web.Response(text='{"id": "broken", "choices": [', content_type="application/json")
        if reply.kind == "truncated":
            recorded.status = 200
            payload = json.dumps(ok_body(Reply.text("this answer is cut off"))).encode()  # type: ignore[call-arg]
            response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            if request.transport is not None:
                request.transport.close()
            return response
        recorded.status = 200
        self.ok_by_text[recorded.user_text()] += 1
        return web.json_response(ok_body(reply))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        """Start serving in a background thread; returns when the port is bound."""
        self._thread = threading.Thread(target=self._serve, name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start within 10 s")
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._start_app())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
        loop.close()

    async def _start_app(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        """Stop serving and join the thread (hung requests are released)."""
        if self._loop is None or self._thread is None:
            return
        loop = self._loop

        def _halt() -> None:
            assert self._stopping is not None
            self._stopping.set()
            loop.call_later(0.05, loop.stop)

        loop.call_soon_threadsafe(_halt)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the foreground (for ``python -m``); prints ``LISTENING <port>``."""
        self.start()
        print(f"LISTENING {self.port}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.stop()


def _usage(reply: Reply, request_text: str) -> tuple[int, int]:
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, len(request_text) // 4)
    completion = reply.completion_tokens if reply.completion_tokens is not None else max(1, len(reply.text) // 4)
    return prompt, completion


class FakeOpenAIServer(ScriptedServer):
    """The OpenAI chat-completions, files and batches API."""

    def routes(self) -> list[web.RouteDef]:
        """Chat completions, files, batches."""
        return super().routes() + [
            web.post("/v1/chat/completions", self._chat),
            web.post("/v1/files", self._upload),
            web.get("/v1/files/{file_id}/content", self._download),
            web.post("/v1/batches", self._create_batch),
            web.get("/v1/batches/{batch_id}", self._get_batch),
        ]

    def completion_body(self, reply: Reply, body: dict[str, Any] | None) -> dict[str, Any]:
        """A chat.completion object for a text or JSON reply."""
        prompt, completion = _usage(reply, json.dumps((body or {}).get("messages", "")))
        return {
            "id": self.new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (body or {}).get("model", "fake-model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply.text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }

    @staticmethod
    def error_body(reply: Reply) -> dict[str, Any]:
        """OpenAI's error envelope."""
        kind = {429: "rate_limit_exceeded", 400: "invalid_request_error", 401: "invalid_api_key"}.get(reply.status_code, "server_error")
        return {"error": {"message": reply.message, "type": kind, "code": kind, "param": None}}

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        reply = self.next_reply(recorded)
        return await self.send(request, recorded, reply, lambda r: self.completion_body(r, recorded.body), self.error_body)

    async def _upload(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        form = await request.post()
        upload = form.get("file")
        data = upload.file.read() if hasattr(upload, "file") else str(upload or "").encode()
        file_id = self.new_id("file-")
        self.files[file_id] = data
        recorded.body = {"purpose": form.get("purpose"), "file_id": file_id, "lines": data.count(b"\n") + 1}
        recorded.status = 200
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": getattr(upload, "filename", "batch.jsonl"), "purpose": form.get("purpose"),
                                  "status": "processed"})

    async def _download(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            recorded.status = 404
            return web.json_response(self.error_body(Reply.status(404, "No such file")), status=404)
        recorded.status = 200
        return web.Response(body=data, content_type="application/octet-stream")

    def _batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in batch.items() if not key.startswith("_")}

    async def _create_batch(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        body = recorded.body or {}
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            recorded.status = 400
            return web.json_response(self.error_body(Reply.status(400, f"unknown input_file_id {file_id}")), status=400)
        lines = [json.loads(line) for line in self.files[file_id].decode().splitlines() if line.strip()]
        batch_id = self.new_id("batch_")
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "input_file_id": file_id,
            "completion_window": body.get("completion_window", "24h"), "status": "in_progress",
            "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
            "_lines": lines, "_polls": 0,
        }
        recorded.status = 200
        return web.json_response(self._batch_object(self.batches[batch_id]))

    def _finish_batch(self, batch: dict[str, Any]) -> None:
        out: list[str] = []
        failed = 0
        for line in batch["_lines"]:
            body = line.get("body") or {}
            shadow = RecordedRequest("POST", self.completion_path, {}, body, time.monotonic())
            reply = self.next_reply(shadow)
            if reply.kind == "error":
                failed += 1
                out.append(json.dumps({"id": self.new_id("batch_req_"), "custom_id": line["custom_id"],
                                       "response": {"status_code": reply.status_code, "body": self.error_body(reply)},
                                       "error": None}))
            else:
                self.ok_by_text[shadow.user_text()] += 1
                out.append(json.dumps({"id": self.new_id("batch_req_"), "custom_id": line["custom_id"],
                                       "response": {"status_code": 200, "body": self.completion_body(reply, body)},
                                       "error": None}))
        output_id = self.new_id("file-")
        self.files[output_id] = ("\n".join(out) + "\n").encode()
        batch.update(status="completed", output_file_id=output_id,
                     request_counts={"total": len(out), "completed": len(out) - failed, "failed": failed})


def main() -> None:
    """Serve from the command line (``python -m tests.fakes.openai_server``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="fraction of calls answered 429")
    parser.add_argument("--retry-after", type=float, default=0.05)
    args = parser.parse_args()
    server = FakeOpenAIServer(port=args.port, latency=args.latency, record_bodies=False)
    server.fault_rate = args.fault_rate
    server.fault = Reply.rate_limited(retry_after=args.retry_after)
    server.serve_forever()


if __name__ == "__main__":
    main()
