"""Web search backends for RAG over HTTP: Google Programmable Search (what the paper used), Bing,
Brave, Tavily and SerpAPI; and ``web``, which uses the first of them whose key is set.

Each reads its API key from an environment variable (never from the config file, so keys stay
out of run.json and cache keys) and takes an ``endpoint`` option, so a proxy or a test server on
127.0.0.1 can stand in for the real API. The number of results is the engine's ``rag_top_k``
(3 by default). HTTP 429 and 5xx are retried with backoff that honours Retry-After; any other
failure is raised and becomes an error observation in the dialogue.
"""

from __future__ import annotations

import html
import os
import re
from abc import abstractmethod
from typing import Any, ClassVar

from pydantic import Field

from mmat_core.components import ComponentOptions, SearchBackend
from mmat_core.errors import ConfigError, MmatError
from mmat_core.models import SearchHit

_TAG = re.compile(r"<[^>]+>")


def clean_snippet(text: Any) -> str:
    """Snippet text without HTML tags or entities, on one line."""
    return " ".join(html.unescape(_TAG.sub("", str(text or ""))).split())


class WebSearchError(MmatError, RuntimeError):
    """A search API refused or failed a query."""


class WebSearchOptions(ComponentOptions):
    """Options every web search backend takes."""

    api_key_env: str = Field("", description="environment variable holding the API key (default per backend)")
    endpoint: str | None = Field(None, description="override the API's URL (a proxy, or a local test server)")
    timeout_s: float = Field(20.0, gt=0)
    max_retries: int = Field(3, ge=0, le=10, description="retries on HTTP 429 and 5xx")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles each time unless Retry-After says otherwise")


class WebSearch(SearchBackend):
    """Shared HTTP plumbing of the web backends."""

    #: The API's URL.
    default_endpoint: ClassVar[str] = ""
    #: The environment variable read for the key when ``api_key_env`` is not given.
    default_key_env: ClassVar[str] = ""
    #: Most results one request may ask for.
    max_count: ClassVar[int] = 10
    Options = WebSearchOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.key_env = self.options.api_key_env or self.default_key_env
        if not os.environ.get(self.key_env):
            raise ConfigError(f"the {self.name} search backend needs an API key: set the environment variable "
                              f"{self.key_env} (or name another one with api_key_env)", key="search.api_key_env")
        self.endpoint = self.options.endpoint or self.default_endpoint
        self._client: Any = None

    @property
    def api_key(self) -> str:
        """The key, read when needed (it never enters options, logs or cache keys)."""
        return os.environ.get(self.key_env, "")

    @abstractmethod
    def request(self, query: str, count: int) -> dict[str, Any]:
        """``httpx`` request arguments for one query: method, params/json, headers."""

    @abstractmethod
    def parse(self, body: Any) -> list[SearchHit]:
        """Hits from the API's JSON body, best first."""

    async def search(self, query: str, k: int) -> list[SearchHit]:
        """Up to ``k`` hits for ``query``."""
        import asyncio  # imported when searching: listing the backends must not import it

        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.options.timeout_s)
        spec = self.request(query, max(1, min(k, self.max_count)))
        method = spec.pop("method", "GET")
        delay = self.options.backoff_s
        for attempt in range(self.options.max_retries + 1):
            try:
                response = await self._client.request(method, self.endpoint, **spec)
            except httpx.TransportError as exc:
                if attempt >= self.options.max_retries:
                    raise WebSearchError(f"{self.name}: cannot reach {self.endpoint}: {type(exc).__name__}") from None
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if response.status_code == 200:
                try:
                    body = response.json()
                except ValueError:
                    raise WebSearchError(f"{self.name}: the reply is not JSON") from None
                return self.parse(body)[:k]
            if response.status_code in (429, 500, 502, 503, 504) and attempt < self.options.max_retries:
                retry_after = response.headers.get("retry-after", "")
                wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else delay
                await asyncio.sleep(min(wait, 60.0))
                delay *= 2
                continue
            hint = " (check the API key)" if response.status_code in (401, 403) else ""
            raise WebSearchError(f"{self.name}: HTTP {response.status_code}{hint}: {clean_snippet(response.text)[:200]}")
        raise WebSearchError(f"{self.name}: no answer after {self.options.max_retries + 1} attempts")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


#: Where Google's engine ID is read from when the option ``engine_id`` is not given.
GOOGLE_ENGINE_ID_ENV = "GOOGLE_CSE_ID"


class GoogleOptions(WebSearchOptions):
    """Options of Google Programmable Search."""

    engine_id: str | None = Field(None, description=f"the Programmable Search Engine ID (the `cx` parameter); "
                                  f"default: the environment variable {GOOGLE_ENGINE_ID_ENV}")


class GoogleSearch(WebSearch):
    """Google Programmable Search (Custom Search JSON API), as in the paper."""

    name = "google"
    version = "1"
    description = "Google Programmable Search (Custom Search JSON API); key in GOOGLE_API_KEY"
    default_endpoint = "https://www.googleapis.com/customsearch/v1"
    default_key_env = "GOOGLE_API_KEY"
    Options = GoogleOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.engine_id = self.options.engine_id or os.environ.get(GOOGLE_ENGINE_ID_ENV, "")
        if not self.engine_id:
            raise ConfigError(f"the google search backend needs a Programmable Search Engine ID: give engine_id "
                              f"or set the environment variable {GOOGLE_ENGINE_ID_ENV}", key="search.engine_id")

    def request(self, query: str, count: int) -> dict[str, Any]:
        """GET with key, cx, q and num."""
        return {"params": {"key": self.api_key, "cx": self.engine_id, "q": query, "num": count}}

    def parse(self, body: Any) -> list[SearchHit]:
        """``items[]`` of title, link, snippet."""
        return [SearchHit(title=clean_snippet(i.get("title")), snippet=clean_snippet(i.get("snippet")), url=i.get("link"))
                for i in body.get("items") or [] if i.get("snippet")]


class BingOptions(WebSearchOptions):
    """Options of Bing Web Search."""

    market: str | None = Field(None, description="e.g. en-US")


class BingSearch(WebSearch):
    """Bing Web Search API v7."""

    name = "bing"
    version = "1"
    description = "Bing Web Search API v7; key in BING_API_KEY"
    default_endpoint = "https://api.bing.microsoft.com/v7.0/search"
    default_key_env = "BING_API_KEY"
    max_count = 50
    Options = BingOptions

    def request(self, query: str, count: int) -> dict[str, Any]:
        """GET with q and count; the key goes in a header."""
        params: dict[str, Any] = {"q": query, "count": count, "textFormat": "Raw"}
        if self.options.market:
            params["mkt"] = self.options.market
        return {"params": params, "headers": {"Ocp-Apim-Subscription-Key": self.api_key}}

    def parse(self, body: Any) -> list[SearchHit]:
        """``webPages.value[]`` of name, url, snippet."""
        values = (body.get("webPages") or {}).get("value") or []
        return [SearchHit(title=clean_snippet(v.get("name")), snippet=clean_snippet(v.get("snippet")), url=v.get("url"))
                for v in values if v.get("snippet")]


class BraveOptions(WebSearchOptions):
    """Options of Brave Search."""

    country: str | None = Field(None, description="two-letter country code")


class BraveSearch(WebSearch):
    """Brave Search API (web results)."""

    name = "brave"
    version = "1"
    description = "Brave Search API; key in BRAVE_API_KEY"
    default_endpoint = "https://api.search.brave.com/res/v1/web/search"
    default_key_env = "BRAVE_API_KEY"
    max_count = 20
    Options = BraveOptions

    def request(self, query: str, count: int) -> dict[str, Any]:
        """GET with q and count; the key goes in X-Subscription-Token."""
        params: dict[str, Any] = {"q": query, "count": count}
        if self.options.country:
            params["country"] = self.options.country
        return {"params": params, "headers": {"X-Subscription-Token": self.api_key, "Accept": "application/json"}}

    def parse(self, body: Any) -> list[SearchHit]:
        """``web.results[]`` of title, url, description (with <strong> tags, removed)."""
        results = (body.get("web") or {}).get("results") or []
        return [SearchHit(title=clean_snippet(r.get("title")), snippet=clean_snippet(r.get("description")), url=r.get("url"))
                for r in results if r.get("description")]


class TavilyOptions(WebSearchOptions):
    """Options of Tavily."""

    search_depth: str = Field("basic", description="basic or advanced")


class TavilySearch(WebSearch):
    """Tavily search API."""

    name = "tavily"
    version = "1"
    description = "Tavily search API; key in TAVILY_API_KEY"
    default_endpoint = "https://api.tavily.com/search"
    default_key_env = "TAVILY_API_KEY"
    max_count = 20
    Options = TavilyOptions

    def request(self, query: str, count: int) -> dict[str, Any]:
        """POST JSON; the key goes in a bearer header."""
        return {"method": "POST", "json": {"query": query, "max_results": count, "search_depth": self.options.search_depth},
                "headers": {"Authorization": f"Bearer {self.api_key}"}}

    def parse(self, body: Any) -> list[SearchHit]:
        """``results[]`` of title, url, content, score."""
        return [SearchHit(title=clean_snippet(r.get("title")), snippet=clean_snippet(r.get("content")), url=r.get("url"),
                          score=r.get("score"))
                for r in body.get("results") or [] if r.get("content")]


class SerpApiOptions(WebSearchOptions):
    """Options of SerpAPI."""

    engine: str = Field("google", description="SerpAPI engine, e.g. google or bing")


class SerpApiSearch(WebSearch):
    """SerpAPI (Google results by default)."""

    name = "serpapi"
    version = "1"
    description = "SerpAPI (Google results by default); key in SERPAPI_API_KEY"
    default_endpoint = "https://serpapi.com/search.json"
    default_key_env = "SERPAPI_API_KEY"
    Options = SerpApiOptions

    def request(self, query: str, count: int) -> dict[str, Any]:
        """GET with engine, q, num and api_key."""
        return {"params": {"engine": self.options.engine, "q": query, "num": count, "api_key": self.api_key}}

    def parse(self, body: Any) -> list[SearchHit]:
        """``organic_results[]`` of title, link, snippet."""
        return [SearchHit(title=clean_snippet(r.get("title")), snippet=clean_snippet(r.get("snippet")), url=r.get("link"))
                for r in body.get("organic_results") or [] if r.get("snippet")]


WEB_BACKENDS: tuple[type[WebSearch], ...] = (GoogleSearch, BingSearch, BraveSearch, TavilySearch, SerpApiSearch)
_BY_NAME: dict[str, type[WebSearch]] = {cls.name: cls for cls in WEB_BACKENDS}


def provider_needs(cls: type[WebSearch], options: dict[str, Any]) -> list[str]:
    """The environment variables a provider needs that are not set (empty: it can be used)."""
    missing = []
    key_env = options.get("api_key_env") or cls.default_key_env
    if not os.environ.get(key_env):
        missing.append(key_env)
    if cls is GoogleSearch and not options.get("engine_id") and not os.environ.get(GOOGLE_ENGINE_ID_ENV):
        missing.append(GOOGLE_ENGINE_ID_ENV)
    return missing


def looked_for(providers: list[str], options: dict[str, dict[str, Any]]) -> str:
    """The keys a search for a usable provider looks at, e.g. ``GOOGLE_API_KEY + GOOGLE_CSE_ID, BING_API_KEY``."""
    wanted = []
    for name in providers:
        cls, own = _BY_NAME[name], options.get(name) or {}
        needs = [own.get("api_key_env") or cls.default_key_env] + ([GOOGLE_ENGINE_ID_ENV] if cls is GoogleSearch and not own.get("engine_id") else [])
        wanted.append(" + ".join(needs))
    return ", ".join(wanted)


#: How to do without a web key, for every message that says none is set.
LOCAL_HINT = ("or search a local corpus instead: --set search.name=local --set search.corpus=CORPUS.jsonl "
              "(see docs/tools.md), or turn RAG off with --set search=null")


class AnyWebOptions(ComponentOptions):
    """Options of the ``web`` backend."""

    providers: list[str] = Field(default_factory=lambda: [cls.name for cls in WEB_BACKENDS],
                                 description="web backends tried in this order; the first whose key is set is used")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options per provider, e.g. {google: {engine_id: ..., endpoint: ...}}")


class AnyWebSearch(SearchBackend):
    """Whichever web search backend has its key set: the paper's web RAG without naming a provider.

    Providers are tried in the order of ``providers`` (Google first, as in the paper); the first
    whose environment variables are set is used for the whole run. None set is a ConfigError,
    raised when the pipeline is assembled (before any work), that names every key it looked for.
    """

    name = "web"
    version = "1"
    description = "the first web search backend whose API key is set (google, bing, brave, tavily, serpapi)"
    Options = AnyWebOptions
    options: AnyWebOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        unknown = [name for name in self.options.providers + list(self.options.options) if name not in _BY_NAME]
        if unknown:
            raise ConfigError(f"unknown web search provider {unknown[0]!r}; allowed: {', '.join(_BY_NAME)}",
                              key="search.providers")
        chosen = self.available_provider(self.options.providers, self.options.options)
        if chosen is None:
            raise ConfigError(f"RAG needs a web search key and none is set: looked for "
                              f"{looked_for(self.options.providers, self.options.options)}; set one of them, "
                              + LOCAL_HINT, key="search")
        cls = _BY_NAME[chosen]
        self.delegate: WebSearch = cls(cls.Options(**(self.options.options.get(chosen) or {})))
        self.provider = chosen
        self.version = f"{chosen}-{cls.version}"

    @staticmethod
    def available_provider(providers: list[str] | None = None, options: dict[str, dict[str, Any]] | None = None) -> str | None:
        """The first provider (of ``providers``, default all) whose environment variables are set."""
        for name in providers or list(_BY_NAME):
            if name in _BY_NAME and not provider_needs(_BY_NAME[name], (options or {}).get(name) or {}):
                return name
        return None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when one provider's keys are set; else the keys looked for and how to do without."""
        if cls.available_provider() is not None:
            return None
        return (f"no web search key is set (looked for {looked_for(list(_BY_NAME), {})}); set one, {LOCAL_HINT}")

    async def search(self, query: str, k: int) -> list[SearchHit]:
        """The chosen provider's hits."""
        return await self.delegate.search(query, k)

    async def aclose(self) -> None:
        """Close the chosen provider's client."""
        await self.delegate.aclose()
