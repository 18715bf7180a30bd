"""Batch mode: OpenAI Batch and Anthropic Message Batches against the fake servers, including a
run stopped while a batch is in flight and resumed by collecting it."""

from __future__ import annotations

import asyncio
import json

import pytest

from mmat_core.config import load_config
from mmat_core.pipeline import LocalRun, Pipeline

BATCH = {"llm_engine.mode": "batch", "llm_engine.batch_window_s": 0.05, "llm_engine.batch_poll_s": 0.02,
         "llm_engine.prices": {"gpt-4o": {"input": 1.0, "output": 2.0}}, "llm_engine.progress": False}


def pipeline(llm: dict) -> Pipeline:
    return Pipeline(source="sample", llm=llm, tools=[], critics=["answer_match"], formatters=["rr"], search=False,
                    config=load_config(None, BATCH))


def openai_custom_ids(server) -> list[str]:
    """Every custom id in every batch the OpenAI fake was asked to create."""
    ids = []
    for batch in server.batches.values():
        for line in server.files[batch["input_file_id"]].decode().splitlines():
            ids.append(json.loads(line)["custom_id"])
    return ids


def test_openai_batch_mode_runs_the_pipeline_without_live_calls(openai_server, tmp_path):
    result = pipeline({"name": "openai", "base_url": openai_server.base_url, "model": "gpt-4o"}).run(tmp_path / "run")
    counts = result.manifest.counts
    assert openai_server.completions() == []
    assert counts["kept"] == counts["finished"] > 0
    ids = openai_custom_ids(openai_server)
    assert len(ids) == len(set(ids)) == counts["model_calls"]


def test_batch_calls_are_priced_at_the_batch_discount(openai_server, tmp_path):
    usage = pipeline({"name": "openai", "base_url": openai_server.base_url, "model": "gpt-4o"}).run(tmp_path / "run").manifest.usage
    assert usage.cost_usd == pytest.approx((usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1_000_000 * 0.5)


def test_anthropic_message_batches_run_the_pipeline(anthropic_server, tmp_path):
    result = pipeline({"name": "anthropic", "base_url": anthropic_server.root_url, "model": "claude-sonnet-4"}).run(tmp_path / "run")
    assert anthropic_server.completions() == []
    assert result.manifest.counts["kept"] == result.manifest.counts["finished"] > 0
    ids = [item["custom_id"] for batch in anthropic_server.batches.values() for item in batch["_items"]]
    assert len(ids) == len(set(ids)) == result.manifest.counts["model_calls"]


def test_a_run_stopped_with_a_batch_in_flight_resumes_by_collecting_it(openai_server, tmp_path):
    out = tmp_path / "run"
    llm = {"name": "openai", "base_url": openai_server.base_url, "model": "gpt-4o"}
    openai_server.hold_batches = True

    async def stop_once_submitted() -> None:
        task = asyncio.create_task(LocalRun(pipeline(llm), out).run())
        while not openai_server.batches:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # let the journal be written
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stop_once_submitted())
    journal = json.loads((out / "batches.json").read_text())
    [first] = journal["batches"]
    assert first["state"] == "running"

    openai_server.hold_batches = False
    result = pipeline(llm).run(out)
    ids = openai_custom_ids(openai_server)
    assert len(ids) == len(set(ids)), "a request was submitted twice"
    assert set(first["keys"]) <= set(ids)
    assert any(r.path == f"/v1/batches/{first['id']}" for r in openai_server.requests)
    states = {b["id"]: b["state"] for b in json.loads((out / "batches.json").read_text())["batches"]}
    assert states[first["id"]] == "collected"
    assert result.manifest.counts["kept"] == result.manifest.counts["finished"] > 0


def test_a_failed_batch_line_is_recorded_on_its_sample(openai_server, tmp_path):
    from tests.fakes.openai_server import Reply

    openai_server.responder = lambda _request: Reply.status(400, "invalid model")
    result = pipeline({"name": "openai", "base_url": openai_server.base_url, "model": "gpt-4o"}).run(tmp_path / "run")
    counts = result.manifest.counts
    assert counts["finished"] == counts["status_failed"] == counts["read"]
