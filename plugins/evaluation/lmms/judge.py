"""The judge relay: lmms-eval's judge calls answered by one of mmat's LLM backends.

Some lmms-eval tasks ask a judge model (MathVista extracts the answer from the response with
one; HallusionBench grades each answer with one). lmms-eval calls an OpenAI-compatible URL taken
from the environment (``OPENAI_API_URL``, ``MODEL_VERSION``), and not consistently: its judge
layer treats the URL as the API root and appends ``/chat/completions``, HallusionBench's scorer
posts to the URL as it is. mmat therefore starts this relay on 127.0.0.1 for the run, points
``OPENAI_API_URL`` at ``<relay>/v1/chat/completions`` and answers a POST to any path that ends in
``/chat/completions``. Each call becomes an :class:`mmat_core.LLMRequest` to the backend chosen
with ``--judge`` (``openai``, ``anthropic``, or any plugin's), so the judge is configured like
every other model mmat calls and its key never reaches lmms-eval.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from mmat_core import ConfigError, ImageStore, LLMBackend, LLMRequest, Message

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations are not evaluated at run time


def open_backend(name: str, options: dict[str, Any]) -> LLMBackend:
    """The judge backend ``name`` with ``options`` (validated by the backend's own Options model)."""
    from mmat_core import get_plugin_manager

    try:
        backend = get_plugin_manager().create("llm", name, **options)
    except ConfigError:
        raise
    except Exception as exc:  # pydantic's ValidationError, an unknown option: name the flag
        raise ConfigError(f"--judge {name}: {exc}".splitlines()[0]) from exc
    return backend  # type: ignore[return-value]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


class JudgeRelay:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 backed by an mmat LLM backend (a context manager)."""

    def __init__(self, backend: LLMBackend) -> None:
        self.backend = backend
        self.port = 0
        self.calls = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._thread: threading.Thread | None = None
        self._images = ImageStore()

    @property
    def url(self) -> str:
        """The URL lmms-eval posts to (also usable as an API root)."""
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    async def _complete(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        messages = [Message(role=m.get("role", "user") if m.get("role") in ("system", "user", "assistant") else "user",
                            content=_text(m.get("content"))) for m in body.get("messages", [])]
        llm_request = LLMRequest(purpose="eval_judge", messages=messages, temperature=body.get("temperature"),
                                 max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"))
        self.calls += 1
        try:
            answer = await self.backend.complete(llm_request, self._images)
        except Exception as exc:  # noqa: BLE001 - lmms-eval retries and logs; it gets what failed, not a dropped connection
            return web.json_response({"error": {"message": f"judge backend {self.backend.name}: {exc}"}}, status=502)
        return web.json_response({
            "id": f"judge-{self.calls}", "object": "chat.completion", "created": int(time.time()),
            "model": answer.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": answer.finish_reason or "stop"}],
            "usage": {"prompt_tokens": answer.usage.prompt_tokens, "completion_tokens": answer.usage.completion_tokens,
                      "total_tokens": answer.usage.prompt_tokens + answer.usage.completion_tokens},
        })

    async def _route(self, request: Any) -> Any:
        from aiohttp import web

        if request.method == "POST" and request.path.rstrip("/").endswith("/chat/completions"):
            return await self._complete(request)
        return web.json_response({"error": {"message": f"the judge relay answers chat completions only, not {request.path}"}},
                                 status=404)

    def __enter__(self) -> Self:
        from aiohttp import web

        started = threading.Event()
        failure: list[BaseException] = []

        async def start() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._route)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(start())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, which raises it
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="mmat-judge-relay", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise ConfigError(f"could not start the judge relay: {failure[0]}")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is None:
            return

        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            await self.backend.aclose()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(30)
