"""``mmat serve``: the agent behind an OpenAI-compatible endpoint.

Routes::

    POST /v1/chat/completions   one answer from the agent (``stream: true`` gets it as one SSE chunk)
    GET  /v1/models             the served model name, and NAME:rr / NAME:orr / NAME:plain
    GET  /health                200 once the server listens
    GET  /v1/mmat/stats         answers served, running, waiting, cancelled; the tool cache's hits

Each answer comes from an :class:`~mmat_plugins.agent.agent.AgentRuntime` (RR: the model calls
mmat's tools and retrieval until it answers; ORR; or plain), so any harness that speaks the OpenAI
API can evaluate the agent. The response carries what the agent did in ``mmat_trace`` (steps,
operators, tool results, RAG queries), and ``--log`` appends the full Trace of every answer to a
JSONL file. The model name picks the mode: the bare name answers in the server's ``--mode``;
``NAME:rr``, ``NAME:orr`` and ``NAME:plain`` choose one, so one server answers in all three.

The server is aiohttp on 127.0.0.1 by default. Like the viewer, it answers only requests whose
Host header names it (a web page elsewhere cannot reach it through DNS rebinding). At most
``concurrency`` questions run at once; up to ``max_waiting`` more wait, and past that a request
gets 429 with Retry-After.

A request's ``temperature``, ``top_p``, ``stop`` and ``seed`` go to each of the agent's own model
calls; its ``max_tokens`` caps the call whose reply is the answer (``request_max_tokens``: or each
call, or none), and ``finish_reason`` is that call's (``length`` when the answer hit the cap).
Token counts in ``usage`` are summed over the run's model calls. When a
client goes away before its answer, the run is cancelled (no further model call or tool run) and
logged as ``cancelled``. Tool results are kept between requests in a bounded in-memory LRU
(:class:`~mmat_plugins.agent.toolcache.ToolResultCache`), so a second question about the same
image runs no OCR again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from mmat_plugins.agent.agent import DEFAULT_TOOLS, MODES
from mmat_plugins.agent.toolcache import DEFAULT_TOOL_CACHE_SIZE, ToolResultCache
from mmat_plugins.agent.wire import (
    ImagePolicy,
    RequestError,
    agent_query,
    completion_body,
    error_body,
    generation_settings,
    parse_request,
    stream_chunks,
    trace_summary,
)

from mmat_core.errors import ConfigError, MmatError

if TYPE_CHECKING:
    from aiohttp import web
    from mmat_plugins.agent.agent import AgentRuntime

#: Largest request body (base64 images make requests big).
MAX_BODY_BYTES = 64 * 1024 * 1024
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
RuntimeFactory = Callable[[str], "AgentRuntime"]
#: What a request's ``max_tokens`` caps: every model call of the agent (``each-call``), only the
#: call whose reply is the answer (``final-answer``, the default: RR steps keep ``--max-tokens``), or
#: nothing. Harnesses send the small cap of a short answer (lmms-eval: 16 tokens for AI2D and
#: RealWorldQA), which would cut the RR steps mid-tag under ``each-call`` (docs/serve.md).
REQUEST_MAX_TOKENS = ("each-call", "final-answer", "ignore")
DEFAULT_REQUEST_MAX_TOKENS = "final-answer"


def host_allowed(header: str, bound_host: str, port: int, extra: Iterable[str] = ()) -> bool:
    """Whether a request's Host header names this server: a loopback name, the bound address, a
    name given with ``--allow-host``, or, when bound to every interface, any address in digits or
    this machine's own name. Anything else could be a DNS-rebinding page, so it is refused."""
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif header.count(":") == 1:
        name, _, port_text = header.partition(":")
    else:
        name, port_text = header, ""
    if port_text and port_text != str(port):
        return False
    name = name.lower()
    if name in LOOPBACK_NAMES or name == bound_host.lower() or name in {e.lower() for e in extra}:
        return True
    if bound_host in ("", "0.0.0.0", "::"):
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return name in {socket.gethostname().lower(), socket.getfqdn().lower()}
    return False


class AgentServer:
    """An OpenAI-compatible server over the agent runtime (see the module docstring).

    ``runtime_for(mode)`` makes the runtime of a mode; each is made on first use and kept. Use
    :meth:`start_in_thread` (a context manager too) from Python and tests, :meth:`serve_forever`
    from the command line.
    """

    def __init__(self, runtime_for: RuntimeFactory, *, model_name: str, mode: str = "rr", host: str = "127.0.0.1",
                 port: int = 0, concurrency: int = 4, max_waiting: int = 64, images: ImagePolicy | None = None,
                 log_path: Path | None = None, allowed_hosts: Sequence[str] = (),
                 tool_cache: ToolResultCache | None = None,
                 request_max_tokens: str = DEFAULT_REQUEST_MAX_TOKENS) -> None:
        """``tool_cache``: the cache the runtimes made by ``runtime_for`` share, reported at
        ``/v1/mmat/stats`` (:func:`agent_server` makes one). ``request_max_tokens``: what a
        request's ``max_tokens`` caps (:data:`REQUEST_MAX_TOKENS`)."""
        if request_max_tokens not in REQUEST_MAX_TOKENS:
            raise ConfigError(f"unknown request_max_tokens '{request_max_tokens}'; allowed: "
                              f"{', '.join(REQUEST_MAX_TOKENS)}", key="request_max_tokens")
        self.request_max_tokens = request_max_tokens
        if mode not in MODES:
            raise ConfigError(f"unknown mode '{mode}'; allowed: {', '.join(MODES)}", key="mode")
        self.runtime_for = runtime_for
        self.model_name = model_name
        self.mode = mode
        self.host = host
        self.port = port
        self.concurrency = max(1, concurrency)
        self.max_waiting = max(0, max_waiting)
        self.images = images or ImagePolicy()
        self.log_path = log_path
        self.allowed_hosts = list(allowed_hosts)
        self._runtimes: dict[str, AgentRuntime] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._waiting = 0
        self._runner: Any = None
        self._workdir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self.tool_cache = tool_cache
        #: Answers given; runs cancelled because their client went away; runs in progress.
        self.served = 0
        self.cancelled = 0
        self.running = 0

    # -- names --------------------------------------------------------------------------------

    def model_ids(self) -> list[str]:
        """The names ``/v1/models`` lists: the served name first, then one per mode."""
        return [self.model_name] + [f"{self.model_name}:{mode}" for mode in MODES]

    def mode_of(self, model: str) -> str:
        """The mode a request's ``model`` asks for; 404 for a name this server does not serve."""
        if model == self.model_name:
            return self.mode
        name, _, mode = model.rpartition(":")
        if name == self.model_name and mode in MODES:
            return mode
        raise RequestError(f"The model '{model}' does not exist here; this server serves: {', '.join(self.model_ids())}",
                           status=404, code="model_not_found", param="model")

    def runtime(self, mode: str) -> AgentRuntime:
        """The runtime of ``mode``, made on first use."""
        if mode not in self._runtimes:
            self._runtimes[mode] = self.runtime_for(mode)
        return self._runtimes[mode]

    # -- handlers -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL clients use (``http://HOST:PORT/v1``)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    def _app(self) -> web.Application:
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            if not host_allowed(request.headers.get("Host", ""), self.host, self.port, self.allowed_hosts):
                return web.json_response(error_body("unknown Host header: use the address `mmat serve` printed "
                                                    "(or start it with --allow-host NAME)", type="permission_error"),
                                         status=403)
            try:
                return await handler(request)
            except RequestError as exc:
                headers = {"Retry-After": "1"} if exc.status == 429 else None
                return web.json_response(exc.body(), status=exc.status, headers=headers)
            except web.HTTPException as exc:
                kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
                return web.json_response(error_body(f"{exc.reason}: {request.method} {request.path}", type=kind),
                                         status=exc.status)
            except MmatError as exc:
                return web.json_response(error_body(str(exc)), status=400)
            except Exception as exc:  # noqa: BLE001 - a client gets a message, never a dropped connection
                return web.json_response(error_body(f"internal error: {type(exc).__name__}: {exc}", type="server_error"),
                                         status=500)

        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[guard])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{name}", self._model)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/mmat/stats", self._stats)
        return app

    async def _health(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response({"status": "ok", "model": self.model_name, "mode": self.mode})

    def stats(self) -> dict[str, Any]:
        """What ``GET /v1/mmat/stats`` answers."""
        return {"served": self.served, "cancelled": self.cancelled, "running": self.running, "waiting": self._waiting,
                "concurrency": self.concurrency,
                "tool_cache": None if self.tool_cache is None else self.tool_cache.stats()}

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response(self.stats())

    def _model_object(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "mmat"}

    async def _models(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response({"object": "list", "data": [self._model_object(n) for n in self.model_ids()]})

    async def _model(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        name = request.match_info["name"]
        self.mode_of(name)
        return web.json_response(self._model_object(name))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError("the request body is not valid JSON") from None
        chat = parse_request(body)
        mode = self.mode_of(chat.model)
        settings = generation_settings(chat)
        if self.request_max_tokens == "ignore":
            settings = dataclasses.replace(settings, max_tokens=None)
        elif self.request_max_tokens == "final-answer":
            settings = dataclasses.replace(settings, max_tokens_scope="final_answer")
        assert self._semaphore is not None and self._workdir is not None
        folder = self._workdir / uuid.uuid4().hex
        try:
            # The images are checked before the request waits: a bad one is a 400 at once, even under load.
            query = await agent_query(chat, self.images, folder)
            if self._semaphore.locked() and self._waiting >= self.max_waiting:
                raise RequestError(f"too many requests: {self.concurrency} running and {self._waiting} waiting; "
                                   "retry later", status=429, type="rate_limit_error", code="rate_limit_exceeded")
            try:
                self._waiting += 1
                try:
                    await self._semaphore.acquire()
                finally:
                    self._waiting -= 1
                self.running += 1
                try:
                    runtime = self.runtime(mode)
                    sample = runtime.make_sample(query.images, query.question, constraint=query.constraint,
                                                 sample_id=f"serve-{uuid.uuid4().hex[:12]}", source="serve")
                    result = await runtime.run_sample(sample, settings)
                finally:
                    self.running -= 1
                    self._semaphore.release()
            except asyncio.CancelledError:
                # aiohttp cancels the handler when its client's connection closes: the run stops at
                # its next await, so no further model call or tool run is made for nobody.
                self.cancelled += 1
                self._log_cancelled(chat.model, mode, query.question)
                raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.served += 1
        summary = trace_summary(result.trace, mode, query.ignored, result.calls)
        reply = completion_body(chat.model, result.answer, summary, result.trace, result.calls, result.finish_reason)
        self._log(reply, query.question, result.trace.model_dump(mode="json"))
        if result.trace.status == "failed":
            failure = error_body(f"the agent run failed: {result.trace.failure}", type="server_error")
            failure["mmat_trace"] = summary
            return web.json_response(failure, status=500)
        if not chat.stream:
            return web.json_response(reply)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for chunk in stream_chunks(reply):
            await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _log(self, reply: dict[str, Any], question: str, trace: dict[str, Any]) -> None:
        """Append one answer to the ``--log`` JSONL file (the loop is single-threaded: no lock)."""
        if self.log_path is None:
            return
        record = {"id": reply["id"], "created": reply["created"], "model": reply["model"],
                  "mode": reply["mmat_trace"]["mode"], "status": "answered", "question": question,
                  "answer": reply["choices"][0]["message"]["content"],
                  "finish_reason": reply["choices"][0]["finish_reason"], "usage": reply["usage"], "trace": trace}
        self._append(record)

    def _log_cancelled(self, model: str, mode: str, question: str) -> None:
        """A run stopped because its client went away: logged as such, with no answer."""
        self._append({"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model, "mode": mode,
                      "status": "cancelled", "question": question, "answer": None,
                      "reason": "the connection closed before the answer (the client left, or the server stopped)"})

    def _append(self, record: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (port 0 picks a free one; :attr:`port` then holds it)."""
        from aiohttp import web

        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._stopped = asyncio.Event()
        self._workdir = Path(tempfile.mkdtemp(prefix="mmat-serve-"))
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # handler_cancellation: a client that goes away cancels its run instead of leaving it to
        # spend model calls on an answer nobody reads.
        self._runner = web.AppRunner(self._app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._cleanup()
            raise
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for runtime in self._runtimes.values():
            await runtime.aclose()
        self._runtimes.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    async def serve(self, ready: Callable[[AgentServer], None] | None = None) -> None:
        """Start, call ``ready(self)``, serve until :meth:`request_stop` (or SIGINT/SIGTERM), clean up."""
        await self.start()
        loop = asyncio.get_running_loop()
        self._loop = loop
        assert self._stopped is not None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._stopped.set)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - platforms without it
                    pass
        try:
            if ready is not None:
                ready(self)
            await self._stopped.wait()
        finally:
            await self._cleanup()

    def request_stop(self) -> None:
        """Ask a running server to stop (safe from any thread)."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)

    def serve_forever(self, ready: Callable[[AgentServer], None] | None = None) -> None:
        """Serve in this thread until SIGINT or SIGTERM."""
        asyncio.run(self.serve(ready))

    def start_in_thread(self, timeout_s: float = 30.0) -> AgentServer:
        """Serve from a background thread; returns once it listens."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self.serve(lambda _: started.set()))
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                started.set()

        self._thread = threading.Thread(target=run, name="mmat-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not started.wait(0.05):
            if time.monotonic() > deadline:
                raise RuntimeError("mmat serve did not start in time")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop a server started with :meth:`start_in_thread`."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def __enter__(self) -> Self:
        self.start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def agent_server(model: str, *, mode: str = "rr", backend: str = "auto", endpoint: str | None = None,
                 adapter: str | None = None, api_key: str | None = None, tools: Sequence[str] = DEFAULT_TOOLS,
                 extra_operators: Sequence[str] = (), search: str | dict[str, Any] | None = None, max_turns: int = 8,
                 max_tokens: int = 1024, device: str = "auto", served_model_name: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, concurrency: int = 4, max_waiting: int = 64,
                 images: ImagePolicy | None = None, log_path: Path | None = None,
                 allowed_hosts: Sequence[str] = (), tool_cache_size: int = DEFAULT_TOOL_CACHE_SIZE,
                 request_max_tokens: str = DEFAULT_REQUEST_MAX_TOKENS) -> AgentServer:
    """An :class:`AgentServer` over one model (opened once, shared by the runtimes of all modes),
    as ``mmat serve`` makes it::

        with agent_server("demo", backend="offline", tools=["ocr"]) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key="unused")

    Tool and search names are checked here, before the server listens. The runtimes of the three
    modes share one tool-result cache of ``tool_cache_size`` entries (0: none).
    """
    from mmat_plugins.agent.agent import AgentRuntime
    from mmat_plugins.agent.chat import open_chat_model

    chat = open_chat_model(model, endpoint=endpoint, adapter=adapter, api_key=api_key, max_tokens=max_tokens,
                           device=device, backend=backend)

    cache = ToolResultCache(tool_cache_size) if tool_cache_size > 0 else None

    def runtime_for(runtime_mode: str) -> AgentRuntime:
        return AgentRuntime.from_names(chat, tools=list(tools), search=search, extra_operators=list(extra_operators),
                                       mode=runtime_mode, max_turns=max_turns, tool_cache=cache)  # type: ignore[arg-type]

    server = AgentServer(runtime_for, model_name=served_model_name or model, mode=mode, host=host, port=port,
                         concurrency=concurrency, max_waiting=max_waiting, images=images, log_path=log_path,
                         allowed_hosts=allowed_hosts, tool_cache=cache, request_max_tokens=request_max_tokens)
    server.runtime(mode)  # a wrong tool or search name fails now, not at the first request
    return server
