"""The Ray executor's shared services as plain objects (no Ray): the limit authority every worker
asks, and the cluster's engine report."""

from __future__ import annotations

import asyncio

import pytest
from mmat_plugins.executors.ray_executor import cluster_report
from mmat_plugins.executors.ray_services import LimitAuthority

SETTINGS = {"concurrency": 8, "rpm": None, "tpm": None, "adaptive": True, "adaptive_decrease": 0.5,
            "adaptive_recover_after": 25, "adaptive_floor": 0.0}


def test_a_429_seen_by_one_worker_lowers_admission_for_every_worker() -> None:
    async def scenario() -> dict:
        authority = LimitAuthority()
        await authority.configure("openai:m", SETTINGS)
        await authority.admit("openai:m", "w0")
        await authority.pushback("openai:m")  # w0 saw a 429
        return await authority.snapshot()

    limits = asyncio.run(scenario())["openai:m"]
    assert limits["admission_limit"] == 4  # for w1 as much as for w0: one gate
    assert limits["pushbacks"] == limits["decreases"] == 1


def test_the_cluster_concurrency_is_shared_not_multiplied() -> None:
    async def scenario() -> tuple[int, bool]:
        authority = LimitAuthority()
        await authority.configure("openai:m", {**SETTINGS, "concurrency": 2})
        await authority.admit("openai:m", "w0")
        await authority.admit("openai:m", "w1")
        third = asyncio.ensure_future(authority.admit("openai:m", "w1"))
        await asyncio.sleep(0)
        waiting = not third.done()
        await authority.release("openai:m", "w0")
        await third
        return (await authority.snapshot())["openai:m"]["peak_in_flight"], waiting

    peak, waited = asyncio.run(scenario())
    assert waited and peak == 2


def test_a_lost_worker_gives_back_the_slots_it_held() -> None:
    async def scenario() -> tuple[int, dict]:
        authority = LimitAuthority()
        await authority.configure("openai:m", {**SETTINGS, "concurrency": 3})
        for _ in range(3):
            await authority.admit("openai:m", "w0")
        freed = await authority.forget_worker("w0")
        return freed, (await authority.snapshot())["openai:m"]

    freed, limits = asyncio.run(scenario())
    assert freed == 3 and limits["in_flight"] == 0 and limits["held_by_worker"] == {}


def test_the_cluster_engine_report_sums_the_workers_in_the_local_shape() -> None:
    workers = [{"calls_made": 3, "cached_calls": 1, "prompt_tokens": 10, "completion_tokens": 2, "cost_usd": 0.5,
                "binding": "server", "binding_summary": "no limit binds", "name": "openai:m"},
               {"calls_made": 4, "cached_calls": 0, "prompt_tokens": 5, "completion_tokens": 1, "cost_usd": 0.25,
                "binding": "server", "binding_summary": "no limit binds", "name": "openai:m"}]
    report = cluster_report(workers, {"openai:m": {"concurrency": 8, "rpm": 600, "admission_limit": 6}})
    assert report["calls_made"] == 7 and report["cached_calls"] == 1 and report["cost_usd"] == 0.75
    assert report["binding_summary"] == "no limit binds"
    assert report["concurrency"] == 8 and report["rpm"] == 600 and report["admission_limit"] == 6


def test_a_backlogged_rate_bucket_keeps_its_rate_when_its_sleeps_overrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmat_core.engine import limits

    now = [0.0]

    async def late_sleep(delay: float) -> None:  # every sleep overruns by 20 ms, as on a busy machine
        now[0] += delay + 0.02

    monkeypatch.setattr(limits.asyncio, "sleep", late_sleep)
    bucket = limits.RateBucket(600, burst_s=0.1, clock=lambda: now[0])  # 10 a second, capacity 1

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire(1)

    asyncio.run(take(101))
    assert abs(100 / now[0] - 10.0) < 0.1  # not 1 / (0.1 + 0.02) = 8.3 a second


def test_the_cluster_tpm_bucket_takes_the_estimate_and_its_correction() -> None:
    async def scenario() -> float:
        authority = LimitAuthority()
        await authority.configure("openai:m", {**SETTINGS, "tpm": 6000, "rate_burst_s": 10.0})  # 1,000 banked
        await authority.take("openai:m", "tpm", 800)  # the estimate
        await authority.adjust("openai:m", "tpm", -500)  # the call used 300
        return authority.limits["openai:m"].buckets["tpm"].level

    assert 700 <= asyncio.run(scenario()) < 705  # 1,000 - 300, plus what refilled meanwhile


def _totals(calls: int, cached: int, prompt: int) -> dict:
    return {"model_calls": calls, "cached_calls": cached,
            "usage_by_stage": {"steps": {"calls": calls, "prompt_tokens": prompt, "completion_tokens": 1}}}


def test_run_json_totals_include_what_a_lost_worker_last_reported_labelled_as_such() -> None:
    from mmat_plugins.executors.ray_executor import run_totals

    reports = [{"totals": _totals(10, 2, 100)}, {"totals": _totals(5, 0, 50)}]
    lost = {"w2": {"calls_made": 3, "totals": _totals(3, 1, 30)}}
    engine, counts = run_totals(reports, lost)
    assert engine.model_calls == 18 and engine.cached_calls == 3
    assert engine.usage_by_stage["steps"].prompt_tokens == 180
    assert counts == {"lost_workers_counted": 1, "model_calls_of_lost_workers": 3,
                      "cached_calls_of_lost_workers": 1, "tokens_of_lost_workers": 31}


def test_run_json_totals_without_a_lost_worker_carry_no_lost_worker_counts() -> None:
    from mmat_plugins.executors.ray_executor import run_totals

    engine, counts = run_totals([{"totals": _totals(4, 0, 10)}], {"w1": {"calls_made": 0}})  # died before a batch
    assert engine.model_calls == 4 and counts == {}
