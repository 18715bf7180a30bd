"""Web search backends against fake APIs on 127.0.0.1 (each in its provider's own layout)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mmat_core.errors import ConfigError
from mmat_core.plugins import get_plugin_manager
from tests.fakes.search_servers import API_KEY, PROVIDERS

KEY_ENVS = {"google": "GOOGLE_API_KEY", "bing": "BING_API_KEY", "brave": "BRAVE_API_KEY",
            "tavily": "TAVILY_API_KEY", "serpapi": "SERPAPI_API_KEY"}


def backend_for(provider: str, servers: Any, **options: Any) -> Any:
    """The registered backend pointed at the fake's route."""
    route, extra = PROVIDERS[provider]
    cls = get_plugin_manager().get("search", provider)
    return cls(cls.Options(endpoint=servers.url(route), backoff_s=0.01, **extra, **options))


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every provider's key in its default environment variable."""
    for env in KEY_ENVS.values():
        monkeypatch.setenv(env, API_KEY)


def search(backend: Any, query: str, k: int) -> list[Any]:
    """One search, client closed afterwards."""
    async def go() -> list[Any]:
        try:
            return await backend.search(query, k)
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_provider_returns_the_top_k_hits_best_first(provider: str, fake_servers: Any) -> None:
    hits = search(backend_for(provider, fake_servers), "tower in paris", 1)
    assert [(h.title, h.url) for h in hits] == [("Eiffel Tower", "https://example.test/eiffel")]
    assert hits[0].snippet == "The Eiffel Tower is a wrought-iron tower in Paris, completed in 1889 for the World's Fair."


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_provider_asks_the_api_for_k_results(provider: str, fake_servers: Any) -> None:
    search(backend_for(provider, fake_servers), "tower", 3)
    seen = fake_servers.requests[-1]
    count = {"google": seen.query.get("num"), "bing": seen.query.get("count"), "brave": seen.query.get("count"),
             "serpapi": seen.query.get("num"), "tavily": str((seen.body or {}).get("max_results"))}[provider]
    assert count == "3"


def test_a_rate_limited_query_is_retried_after_retry_after(fake_servers: Any) -> None:
    fake_servers.fail_next("/search", 429, retry_after=0.01)
    hits = search(backend_for("tavily", fake_servers), "golden gate bridge", 3)
    assert hits[0].title == "Golden Gate Bridge"
    assert [r.route for r in fake_servers.requests] == ["/search", "/search"]


def test_a_wrong_key_fails_with_a_hint(fake_servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAVE_API_KEY", "wrong")
    with pytest.raises(RuntimeError, match=r"brave: HTTP 401 \(check the API key\)"):
        search(backend_for("brave", fake_servers), "tower", 3)


def test_a_missing_key_is_a_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, fake_servers: Any) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY")
    with pytest.raises(ConfigError, match="set the environment variable GOOGLE_API_KEY"):
        backend_for("google", fake_servers)


def test_html_in_snippets_is_removed(fake_servers: Any) -> None:
    hits = search(backend_for("brave", fake_servers), "paris", 1)
    assert "<strong>" not in hits[0].snippet and "Paris" in hits[0].snippet


def web_backend(servers: Any, **options: Any) -> Any:
    """The ``web`` backend with every provider pointed at its fake route."""
    cls = get_plugin_manager().get("search", "web")
    per = {name: {"endpoint": servers.url(route), "backoff_s": 0.01, **extra} for name, (route, extra) in PROVIDERS.items()}
    return cls(cls.Options(options=per, **options))


def test_web_uses_the_first_provider_whose_key_is_set(fake_servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("GOOGLE_API_KEY", "BING_API_KEY"):
        monkeypatch.delenv(env)
    backend = web_backend(fake_servers)
    assert backend.provider == "brave"
    assert search(backend, "tower in paris", 1)[0].title == "Eiffel Tower"
    assert fake_servers.requests[-1].route == "/res/v1/web/search"


def test_web_follows_the_providers_order(fake_servers: Any) -> None:
    assert web_backend(fake_servers, providers=["tavily", "google"]).provider == "tavily"


def test_web_without_any_key_names_every_key_it_looked_for_and_the_local_corpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for env in KEY_ENVS.values():
        monkeypatch.delenv(env)
    cls = get_plugin_manager().get("search", "web")
    with pytest.raises(ConfigError) as info:
        cls(cls.Options())
    message = str(info.value)
    assert message.startswith("search: RAG needs a web search key")
    for env in (*KEY_ENVS.values(), "GOOGLE_CSE_ID"):
        assert env in message
    assert "--set search.name=local --set search.corpus=" in message


def test_google_reads_its_engine_id_from_the_environment(fake_servers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.search_servers import ENGINE_ID

    monkeypatch.setenv("GOOGLE_CSE_ID", ENGINE_ID)
    cls = get_plugin_manager().get("search", "google")
    backend = cls(cls.Options(endpoint=fake_servers.url("/customsearch/v1")))
    assert search(backend, "tower in paris", 1)[0].title == "Eiffel Tower"
    assert fake_servers.requests[-1].query["cx"] == ENGINE_ID


def test_google_without_an_engine_id_says_where_to_give_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CSE_ID", raising=False)
    cls = get_plugin_manager().get("search", "google")
    with pytest.raises(ConfigError, match="give engine_id or set the environment variable GOOGLE_CSE_ID"):
        cls(cls.Options())


def test_web_is_unavailable_when_google_lacks_its_engine_id_and_no_other_key_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("BING_API_KEY", "BRAVE_API_KEY", "TAVILY_API_KEY", "SERPAPI_API_KEY", "GOOGLE_CSE_ID"):
        monkeypatch.delenv(env, raising=False)
    cls = get_plugin_manager().get("search", "web")
    assert cls.available_provider() is None
    monkeypatch.setenv("GOOGLE_CSE_ID", "cx")
    assert cls.available_provider() == "google"
