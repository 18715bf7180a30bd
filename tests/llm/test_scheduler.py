"""The scheduler: retries, Retry-After, timeouts, adaptive admission, rate limits, circuit breaker.

Calls go through the real openai backend to the fake server wherever a server fault is the
subject; pure arithmetic (backoff bounds, buckets) is checked directly.
"""

from __future__ import annotations

import asyncio

import pytest

from mmat_core.components import LLMRequest, Message
from mmat_core.engine.errors import CallTimeout, CircuitOpen, Overloaded, PermanentError, RateLimited
from mmat_core.engine.limits import AdmissionGate, RateBucket
from mmat_core.engine.scheduler import Scheduler, SchedulerSettings
from mmat_core.images import ImageStore
from mmat_plugins.llms.openai_backend import OpenAIBackend
from tests.fakes.openai_server import Reply


def request(text: str = "hi") -> LLMRequest:
    return LLMRequest(purpose="caption", messages=[Message(role="user", content=text)])


class RecordingSleep:
    """Records the delays the scheduler asks for and yields without waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def call_through(server, settings: SchedulerSettings, *texts: str, sleep=None):
    """Run one call per text through a scheduler and the openai backend; return results or errors."""
    async def go():
        backend = OpenAIBackend(base_url=server.base_url)
        scheduler = Scheduler(settings, sleep=sleep or asyncio.sleep)
        try:
            results = await asyncio.gather(*(scheduler.run(lambda t=t: backend.complete(request(t), ImageStore()))
                                             for t in texts), return_exceptions=True)
        finally:
            await backend.aclose()
        return scheduler, results
    return asyncio.run(go())


def test_a_429_is_retried_after_the_servers_retry_after(openai_server):
    openai_server.queue(Reply.rate_limited(retry_after=4.5), Reply.text("ok"))
    sleep = RecordingSleep()
    scheduler, [(response, attempts)] = call_through(openai_server, SchedulerSettings(), "a", sleep=sleep)
    assert (response.text, attempts) == ("ok", 2)
    assert sleep.delays == [4.5]
    assert scheduler.stats.rate_limited == 1


@pytest.mark.parametrize("fault", [Reply.server_error(), Reply.overloaded(), Reply.malformed(), Reply.truncated()],
                         ids=["500", "529", "malformed", "truncated"])
def test_transient_faults_end_in_a_completed_call(openai_server, fault):
    openai_server.queue(fault, fault, Reply.text("finally"))
    _, [(response, attempts)] = call_through(openai_server, SchedulerSettings(backoff_base_s=0.01), "a")
    assert (response.text, attempts) == ("finally", 3)


def test_a_hung_connection_times_out_and_is_retried(openai_server):
    openai_server.queue(Reply.hang(), Reply.text("after the hang"))
    scheduler, [(response, attempts)] = call_through(openai_server, SchedulerSettings(timeout_s=0.3, backoff_base_s=0), "a")
    assert (response.text, attempts) == ("after the hang", 2)
    assert scheduler.stats.errors == {"CallTimeout": 1}


def test_a_permanent_error_is_not_retried(openai_server):
    openai_server.queue(Reply.status(400, "bad request"))
    scheduler, [error] = call_through(openai_server, SchedulerSettings(), "a")
    assert isinstance(error, PermanentError)
    assert len(openai_server.completions()) == 1 and scheduler.stats.failed == 1


def test_a_call_that_keeps_failing_is_raised_after_max_attempts(openai_server):
    openai_server.queue(*[Reply.server_error()] * 3)
    _, [error] = call_through(openai_server, SchedulerSettings(max_attempts=3, backoff_base_s=0), "a")
    assert isinstance(error, Overloaded)
    assert "gave up after 3 attempts" in str(error)
    assert len(openai_server.completions()) == 3


def test_every_call_completes_exactly_once_under_random_429s(openai_server):
    openai_server.responder = openai_server.default_reply  # echo, so each answer names its request
    openai_server.fault_rate = 0.3
    openai_server.fault = Reply.rate_limited(retry_after=0)
    texts = [f"q{i}" for i in range(60)]
    scheduler, results = call_through(openai_server, SchedulerSettings(concurrency=16, max_attempts=20), *texts)
    assert sorted(r[0].text for r in results) == sorted(f"echo: {t}" for t in texts)
    assert set(openai_server.ok_by_text.values()) == {1} and len(openai_server.ok_by_text) == 60
    assert scheduler.stats.rate_limited > 0


def test_backoff_without_retry_after_is_full_jitter_under_an_exponential_ceiling():
    scheduler = Scheduler(SchedulerSettings(backoff_base_s=0.5, backoff_max_s=3.0))
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 3.0)]:
        delays = [scheduler.backoff(attempt, None) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2


def test_retry_after_is_capped_by_backoff_max():
    assert Scheduler(SchedulerSettings(backoff_max_s=10)).backoff(1, 3600) == 10


def test_admission_falls_by_a_quarter_on_pushback_and_recovers_by_one_after_successes():
    gate = AdmissionGate(64, recover_after=25, cooldown_s=0)
    assert gate.on_pushback() and gate.current == 48
    for _ in range(25):
        gate.on_success()
    assert gate.current == 49


def test_a_burst_of_429s_from_calls_in_flight_lowers_admission_once():
    gate = AdmissionGate(64, cooldown_s=60)
    assert [gate.on_pushback() for _ in range(10)] == [True] + [False] * 9
    assert gate.current == 48


def test_adaptive_admission_can_be_turned_off():
    gate = AdmissionGate(8, adaptive=False)
    gate.on_pushback()
    assert gate.current == 8


def test_rate_limits_lower_admission_on_the_live_path(openai_server):
    openai_server.queue(Reply.rate_limited(retry_after=0))
    scheduler, _ = call_through(openai_server, SchedulerSettings(concurrency=8), "a")
    assert scheduler.gate.current == 6


def test_concurrency_limit_caps_calls_in_flight(openai_server):
    openai_server.latency = 0.05
    scheduler, results = call_through(openai_server, SchedulerSettings(concurrency=3, adaptive=False),
                                      *[f"q{i}" for i in range(12)])
    starts = sorted(r.received for r in openai_server.completions())
    # With 3 in flight and 50 ms per call, the 4th request cannot arrive before the first answer.
    assert starts[3] - starts[0] >= 0.04
    assert scheduler.stats.waits_s["concurrency"] > 0


def test_rpm_bucket_makes_calls_wait_and_is_reported_as_binding():
    async def go():
        scheduler = Scheduler(SchedulerSettings(rpm=600, rate_burst_s=0.1))  # 10 a second, burst of 1

        async def instant():
            return "ok"

        await asyncio.gather(*(scheduler.run(instant) for _ in range(4)))
        return scheduler
    scheduler = asyncio.run(go())
    assert scheduler.binding()[0] == "rpm"
    assert "llm_engine.rpm=600" in scheduler.describe_binding()


def test_tpm_bucket_charges_the_estimate_and_corrects_it_with_real_usage():
    bucket = RateBucket(6000, burst_s=10)  # capacity 1000 tokens
    asyncio.run(bucket.acquire(600))
    bucket.adjust(100 - 600)  # the call used only 100
    assert bucket.level == pytest.approx(900, abs=5)


def test_no_limit_binding_says_the_server_bounds_throughput():
    async def go():
        scheduler = Scheduler(SchedulerSettings())

        async def slow():
            await asyncio.sleep(0.01)
            return 1

        await asyncio.gather(*(scheduler.run(slow) for _ in range(5)))
        return scheduler
    assert "no limit binds" in asyncio.run(go()).describe_binding()


def test_circuit_breaker_opens_on_persistent_failure_and_says_so(openai_server, caplog):
    openai_server.responder = lambda _request: Reply.server_error()
    settings = SchedulerSettings(breaker_failures=3, breaker_cooldown_s=0, breaker_max_trips=2, max_attempts=50,
                                 backoff_base_s=0)
    with caplog.at_level("WARNING", logger="mmat.engine"):
        scheduler, [error] = call_through(openai_server, settings, "a")
    assert isinstance(error, CircuitOpen)
    assert "failed persistently" in str(error)
    assert any("pausing calls" in message for message in caplog.messages)
    assert scheduler.snapshot()["breaker"] == "open"


def test_circuit_breaker_closes_again_when_the_probe_succeeds(openai_server):
    openai_server.queue(*[Reply.server_error()] * 3, Reply.text("back"))
    settings = SchedulerSettings(breaker_failures=3, breaker_cooldown_s=0, max_attempts=10, backoff_base_s=0)
    scheduler, [(response, _)] = call_through(openai_server, settings, "a")
    assert response.text == "back"
    assert [e.state for e in scheduler.breaker.events] == ["open", "half_open", "closed"]


def test_a_backend_bug_becomes_a_recorded_permanent_error():
    async def broken():
        raise KeyError("choices")

    with pytest.raises(PermanentError, match="KeyError"):
        asyncio.run(Scheduler().run(broken))


def test_rate_limited_and_timeout_are_retryable_permanent_is_not():
    assert RateLimited("x").retryable and CallTimeout("x").retryable and not PermanentError("x").retryable


def test_admission_never_falls_below_its_floor_under_scattered_429s():
    gate = AdmissionGate(64, cooldown_s=0, floor=0.25)
    for _ in range(50):
        gate.on_pushback()
    assert gate.current == 16
