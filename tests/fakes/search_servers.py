"""Fake web-search APIs and a fake detection server on 127.0.0.1, for the RAG and label_bbox tests.

One real HTTP server (aiohttp in a background thread) answers, in each provider's own request
and reply layout:

==========  ==========================  =====================================================
provider    route                       key
==========  ==========================  =====================================================
google      GET  /customsearch/v1        ``key`` query parameter (plus ``cx``)
bing        GET  /v7.0/search            ``Ocp-Apim-Subscription-Key`` header
brave       GET  /res/v1/web/search      ``X-Subscription-Token`` header
tavily      POST /search                 ``Authorization: Bearer`` header
serpapi     GET  /search.json            ``api_key`` query parameter
detector    POST /detect                 optional ``Authorization: Bearer`` header
==========  ==========================  =====================================================

Search results come from a small in-memory corpus ranked by shared words, honouring each API's
count parameter. A wrong key answers 401. ``fail_next(route, status, retry_after)`` makes the
next request to a route fail once; ``requests`` records every request (route, query, headers).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

API_KEY = "test-key"
ENGINE_ID = "test-cx"

CORPUS: list[dict[str, str]] = [
    {"title": "Eiffel Tower", "url": "https://example.test/eiffel",
     "text": "The Eiffel Tower is a wrought-iron tower in Paris, completed in 1889 for the World's Fair."},
    {"title": "Statue of Liberty", "url": "https://example.test/liberty",
     "text": "The Statue of Liberty stands on Liberty Island in New York Harbor and was dedicated in 1886."},
    {"title": "Golden Gate Bridge", "url": "https://example.test/golden-gate",
     "text": "The Golden Gate Bridge is a suspension bridge in San Francisco that opened in 1937."},
    {"title": "Big Ben", "url": "https://example.test/big-ben",
     "text": "Big Ben is the nickname of the great bell of the clock tower at the Palace of Westminster in London."},
    {"title": "Sydney Opera House", "url": "https://example.test/opera",
     "text": "The Sydney Opera House is a performing arts centre in Sydney, opened in 1973."},
]
_WORD = re.compile(r"\w+")


def rank(query: str, count: int) -> list[dict[str, str]]:
    """Corpus entries sharing words with ``query``, most shared first, at most ``count``."""
    words = set(_WORD.findall(query.lower()))
    scored = [(len(words & set(_WORD.findall((d["title"] + " " + d["text"]).lower()))), i, d) for i, d in enumerate(CORPUS)]
    return [d for score, _, d in sorted(scored, key=lambda s: (-s[0], s[1])) if score > 0][:count]


@dataclass
class SeenRequest:
    """One request the fake saw."""

    route: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class FakeSearchServers:
    """The fake APIs (see the module docstring)."""

    #: Boxes the detection server answers, label -> list of (score, [x1, y1, x2, y2]).
    detections: dict[str, list[tuple[float, list[float]]]] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    _faults: dict[str, list[tuple[int, float | None]]] = field(default_factory=dict)
    _port: int = 0

    def fail_next(self, route: str, status: int, retry_after: float | None = None) -> None:
        """Make the next request to ``route`` (e.g. ``/search``) fail once with ``status``."""
        self._faults.setdefault(route, []).append((status, retry_after))

    def url(self, route: str) -> str:
        """Full URL of a route."""
        return f"http://127.0.0.1:{self._port}{route}"

    # -- routes ----------------------------------------------------------------------------------

    async def _common(self, request: Any, key_ok: bool) -> Any:
        from aiohttp import web

        body = await request.json() if request.can_read_body else None
        self.requests.append(SeenRequest(request.path, dict(request.query), dict(request.headers), body))
        faults = self._faults.get(request.path)
        if faults:
            status, retry_after = faults.pop(0)
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return web.json_response({"error": "scripted fault"}, status=status, headers=headers)
        if not key_ok:
            return web.json_response({"error": "invalid key"}, status=401)
        return None

    async def google(self, request: Any) -> Any:
        from aiohttp import web

        q = request.query
        if (fault := await self._common(request, q.get("key") == API_KEY and q.get("cx") == ENGINE_ID)) is not None:
            return fault
        items = [{"title": d["title"], "link": d["url"], "snippet": d["text"]} for d in rank(q["q"], int(q.get("num", 10)))]
        return web.json_response({"kind": "customsearch#search", "items": items})

    async def bing(self, request: Any) -> Any:
        from aiohttp import web

        ok = request.headers.get("Ocp-Apim-Subscription-Key") == API_KEY
        if (fault := await self._common(request, ok)) is not None:
            return fault
        values = [{"name": d["title"], "url": d["url"], "snippet": d["text"]}
                  for d in rank(request.query["q"], int(request.query.get("count", 10)))]
        return web.json_response({"webPages": {"value": values}})

    async def brave(self, request: Any) -> Any:
        from aiohttp import web

        ok = request.headers.get("X-Subscription-Token") == API_KEY
        if (fault := await self._common(request, ok)) is not None:
            return fault
        # Brave marks the matched words with <strong>: the backend must strip the tags.
        results = [{"title": d["title"], "url": d["url"], "description": d["text"].replace("Paris", "<strong>Paris</strong>")}
                   for d in rank(request.query["q"], int(request.query.get("count", 20)))]
        return web.json_response({"type": "search", "web": {"results": results}})

    async def tavily(self, request: Any) -> Any:
        from aiohttp import web

        ok = request.headers.get("Authorization") == f"Bearer {API_KEY}"
        if (fault := await self._common(request, ok)) is not None:
            return fault
        body = self.requests[-1].body or {}
        results = [{"title": d["title"], "url": d["url"], "content": d["text"], "score": round(0.9 - 0.1 * i, 2)}
                   for i, d in enumerate(rank(body.get("query", ""), int(body.get("max_results", 5))))]
        return web.json_response({"query": body.get("query"), "results": results})

    async def serpapi(self, request: Any) -> Any:
        from aiohttp import web

        q = request.query
        if (fault := await self._common(request, q.get("api_key") == API_KEY)) is not None:
            return fault
        results = [{"position": i + 1, "title": d["title"], "link": d["url"], "snippet": d["text"]}
                   for i, d in enumerate(rank(q["q"], int(q.get("num", 10))))]
        return web.json_response({"organic_results": results})

    async def detect(self, request: Any) -> Any:
        from aiohttp import web

        auth = request.headers.get("Authorization")
        if (fault := await self._common(request, auth in (None, f"Bearer {API_KEY}"))) is not None:
            return fault
        body = self.requests[-1].body or {}
        if not isinstance(body.get("image"), str) or not isinstance(body.get("labels"), list):
            return web.json_response({"error": "need image (base64) and labels"}, status=400)
        out = [{"label": label, "score": score, "box": box}
               for label in body["labels"] for score, box in self.detections.get(label, [])]
        return web.json_response({"detections": out})

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeSearchServers:
        """Serve in a background thread."""
        from aiohttp import web

        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            app = web.Application()
            app.router.add_get("/customsearch/v1", self.google)
            app.router.add_get("/v7.0/search", self.bing)
            app.router.add_get("/res/v1/web/search", self.brave)
            app.router.add_post("/search", self.tavily)
            app.router.add_get("/search.json", self.serpapi)
            app.router.add_post("/detect", self.detect)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        def serve() -> None:
            self._loop.run_until_complete(boot())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-search", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake search servers did not start")
        return self

    def stop(self) -> None:
        """Stop serving."""
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FakeSearchServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: provider name -> (route, options the backend needs besides the endpoint).
PROVIDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "google": ("/customsearch/v1", {"engine_id": ENGINE_ID}),
    "bing": ("/v7.0/search", {}),
    "brave": ("/res/v1/web/search", {}),
    "tavily": ("/search", {}),
    "serpapi": ("/search.json", {}),
}


def titles(hits: Sequence[Any]) -> list[str]:
    """Titles of search hits, for compact assertions."""
    return [h.title for h in hits]
