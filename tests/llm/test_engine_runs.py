"""The engine inside whole runs: cache reuse, cost accounting, recorded failures, key hygiene,
and `mmat cache` — the sample pipeline against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmat_core.cli import main
from mmat_core.components import LLMRequest, Message
from mmat_core.config import load_config
from mmat_core.engine.cache import Cache
from mmat_core.engine.client import EngineClient
from mmat_core.engine.scheduler import Scheduler
from mmat_core.images import ImageStore
from mmat_core.pipeline import Pipeline
from mmat_plugins.llms.openai_backend import OpenAIBackend
from tests.fakes.openai_server import Reply
from tests.llm.conftest import OPENAI_TEST_KEY

PRICES = {"gpt-4o": {"input": 1.0, "output": 2.0}}


def pipeline(server, **settings) -> Pipeline:
    overrides = {"llm_engine.prices": PRICES, "llm_engine.backoff_base_s": 0.0, "llm_engine.progress": False}
    overrides.update(settings)
    config = load_config(None, overrides)
    return Pipeline(source="sample", llm={"name": "openai", "base_url": server.base_url, "model": "gpt-4o"},
                    tools=[], critics=["answer_match"], formatters=["rr"], search=False, config=config)


def test_a_run_records_tokens_and_cost_per_stage_and_source(openai_server, tmp_path):
    result = pipeline(openai_server).run(tmp_path / "run")
    manifest = result.manifest
    rationale = manifest.usage_by_stage["rationale"]
    calls = openai_server.completions()
    assert rationale.calls == len(calls) == manifest.counts["model_calls"]
    expected = (rationale.prompt_tokens * 1.0 + rationale.completion_tokens * 2.0) / 1_000_000
    assert rationale.cost_usd == pytest.approx(expected)
    assert manifest.usage.cost_usd == pytest.approx(expected)
    assert manifest.yield_by_source["sample"].cost_usd == pytest.approx(expected)
    assert manifest.counts["kept"] == manifest.counts["finished"] > 0


def test_a_rerun_of_an_unchanged_pipeline_makes_zero_model_calls(openai_server, tmp_path):
    shared = {"engine.cache_path": str(tmp_path / "shared-cache.sqlite")}
    first = pipeline(openai_server, **shared).run(tmp_path / "first")
    calls_after_first = len(openai_server.completions())
    second = pipeline(openai_server, **shared).run(tmp_path / "second")
    assert len(openai_server.completions()) == calls_after_first
    assert second.manifest.counts["model_calls"] == 0
    assert second.manifest.counts["cached_calls"] == first.manifest.counts["model_calls"]
    assert second.manifest.usage.cost_usd == 0


def test_every_failed_call_ends_as_a_reasoned_failure_on_its_sample(openai_server, tmp_path):
    openai_server.responder = lambda _request: Reply.status(400, "model not found")
    result = pipeline(openai_server).run(tmp_path / "run")
    counts = result.manifest.counts
    assert counts["finished"] == counts["read"] == counts["status_failed"] > 0
    reasons = result.manifest.yield_by_source["sample"].reasons
    assert list(reasons) == ["llm_error"]
    assert counts["failed_calls"] == counts["finished"]


def test_an_api_key_never_lands_in_the_run_directory(openai_server, tmp_path):
    openai_server.queue(Reply.status(401, f"bad key {OPENAI_TEST_KEY}"))
    pipeline(openai_server).run(tmp_path / "run")
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert OPENAI_TEST_KEY.encode() not in path.read_bytes(), path


def test_the_run_writes_an_engine_report_saying_what_binds(openai_server, tmp_path):
    result = pipeline(openai_server).run(tmp_path / "run")
    report = json.loads((tmp_path / "run" / "engine.json").read_text())
    assert report["calls_made"] == result.manifest.counts["model_calls"]
    assert "binding" in report and report["binding_summary"]


def _client(server, tmp_path: Path) -> EngineClient:
    return EngineClient(OpenAIBackend(base_url=server.base_url), Scheduler(), ImageStore(), Cache(tmp_path / "c.sqlite"))


def _request(version: str, text: str) -> LLMRequest:
    return LLMRequest(purpose="critic_general", prompt_version=version, sample_id="s1",
                      messages=[Message(role="user", content=text)])


def test_changing_one_prompt_re_asks_only_the_calls_it_touches(openai_server, tmp_path):
    async def go():
        client = _client(openai_server, tmp_path)
        await client.complete(_request("judge-1", "first"))
        await client.complete(_request("judge-1", "second"))
        await client.complete(_request("judge-1", "first"))
        await client.complete(_request("judge-2", "second"))
        await client.backend.aclose()
        return client
    client = asyncio.run(go())
    assert [r.user_text() for r in openai_server.completions()] == ["first", "second", "second"]
    assert (client.calls_made, client.cached_calls) == (3, 1)


def test_identical_requests_in_flight_are_sent_once(openai_server, tmp_path):
    openai_server.latency = 0.05

    async def go():
        client = _client(openai_server, tmp_path)
        results = await asyncio.gather(*(client.complete(_request("v", "same")) for _ in range(5)))
        await client.backend.aclose()
        return results
    results = asyncio.run(go())
    assert len(openai_server.completions()) == 1
    assert sum(not call.cached for _, call in results) == 1


def test_cache_explain_shows_what_changed_a_key(openai_server, tmp_path):
    async def go():
        client = _client(openai_server, tmp_path)
        await client.complete(_request("judge-1", "look"))
        await client.complete(_request("judge-2", "look"))
        await client.complete(_request("judge-2", "look"))
        await client.backend.aclose()
    asyncio.run(go())
    cache = Cache(tmp_path / "c.sqlite")
    first, second = cache.explain("s1")
    assert (first["reused"], second["reused"]) == (False, True)
    assert second["changed"] == ["prompt_version: judge-1 -> judge-2"]


def test_cache_commands_report_reuse_and_explain_a_sample(openai_server, tmp_path):
    shared = {"engine.cache_path": str(tmp_path / "cache.sqlite")}
    pipeline(openai_server, **shared).run(tmp_path / "first")
    pipeline(openai_server, **shared).run(tmp_path / "second")
    runner = CliRunner()
    stats = runner.invoke(main, ["cache", "stats", "--cache", str(tmp_path / "cache.sqlite"), "--json"])
    assert stats.exit_code == 0, stats.output
    data = json.loads(stats.output)
    assert data["hits"] == data["entries"] > 0
    explain = runner.invoke(main, ["cache", "explain", "sample/chart-001", "-r", str(tmp_path / "second")])
    assert explain.exit_code == 0, explain.output
    assert "rationale_step" in explain.output and "reused 1x" in explain.output
