"""``mmat serve``: what a run costs and how it ends.

Token counts in ``usage``, a request's generation settings reaching each model call, a run
cancelled when its client goes away, and tool results kept between requests. The servers are real
(in-thread :class:`AgentServer` or a ``mmat serve`` subprocess on 127.0.0.1) in front of the
scripted fake VLM; clients are the official ``openai`` client, httpx and a raw socket.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from mmat_plugins.agent import AgentRuntime, OpenAIChatModel, agent_server
from mmat_plugins.agent.serve import AgentServer
from mmat_plugins.agent.toolcache import ToolResultCache

from mmat_core.plugins import get_plugin_manager
from tests.fakes.vlm_server import FakeVLM, step
from tests.runtime.test_serve import ServeProcess, ask, draw_sign


def _wait_for(condition: Any) -> None:
    event = threading.Event()
    for _ in range(1200):
        if condition():
            return
        event.wait(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture(scope="module")
def sign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return draw_sign(tmp_path_factory.mktemp("sign") / "sign.png", "EXIT 42")


@pytest.fixture(scope="module")
def vlm() -> Iterator[FakeVLM]:
    with FakeVLM(protocol="rr") as fake:
        yield fake


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-runs") / "answers.jsonl"


@pytest.fixture(scope="module")
def server(vlm: FakeVLM, log_file: Path) -> Iterator[AgentServer]:
    """``agent_server`` over the fake (openai backend) with OCR; one question at a time, none waiting."""
    with agent_server("tuned", backend="openai", endpoint=vlm.base_url, tools=["ocr"], concurrency=1, max_waiting=0,
                      log_path=log_file) as running:
        yield running


def client(server: AgentServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


def stats(server: AgentServer) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/mmat/stats", timeout=30).json()


# -- usage -----------------------------------------------------------------------------------------


def test_usage_sums_the_token_counts_the_backend_reported_for_every_call(server: AgentServer, vlm: FakeVLM,
                                                                         sign: Path) -> None:
    question = "What number is on the sign (usage)?"
    vlm.script(question, [step("Read the sign.", ["ocr"]), step("The sign says 42.", final=True)], answer="42")
    response = client(server).chat.completions.create(model="tuned", messages=ask(question, sign))  # type: ignore[arg-type]
    seen = vlm.recorded(question)
    assert response.usage is not None and len(seen) == 3
    assert response.usage.prompt_tokens == sum(r.prompt_tokens for r in seen) > 0
    assert response.usage.completion_tokens == sum(r.completion_tokens for r in seen) > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_mmat_trace_lists_each_model_call_with_its_tokens(server: AgentServer, vlm: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (per call)?"
    vlm.script(question, [step("Read the sign.", ["ocr"]), step("Done.", final=True)], answer="42")
    response = client(server).chat.completions.create(model="tuned", messages=ask(question, sign))  # type: ignore[arg-type]
    calls = response.model_extra["mmat_trace"]["calls"]  # type: ignore[index]
    assert [(c["purpose"], c["prompt_tokens"], c["completion_tokens"]) for c in calls] == [
        ("rr_step", r.prompt_tokens, r.completion_tokens) if r.purpose == "rationale_step"
        else ("final_answer", r.prompt_tokens, r.completion_tokens) for r in vlm.recorded(question)]


def test_the_log_keeps_the_usage_of_each_answer(server: AgentServer, vlm: FakeVLM, sign: Path, log_file: Path) -> None:
    question = "What number is on the sign (usage log)?"
    vlm.script(question, [step("Done.", final=True)], answer="42")
    response = client(server).chat.completions.create(model="tuned", messages=ask(question, sign))  # type: ignore[arg-type]
    record = next(r for r in map(json.loads, log_file.read_text().splitlines()) if r["id"] == response.id)
    assert record["status"] == "answered" and record["usage"] == response.usage.model_dump(exclude_none=True)  # type: ignore[union-attr]
    assert record["trace"]["steps"][0]["model_call"]["usage"]["prompt_tokens"] > 0


# -- generation settings -----------------------------------------------------------------------------


def test_the_request_settings_reach_every_model_call_and_max_tokens_only_the_answer(server: AgentServer, vlm: FakeVLM,
                                                                                    sign: Path) -> None:
    question = "What number is on the sign (settings)?"
    vlm.script(question, [step("Read the sign.", ["ocr"]), step("Done.", final=True)], answer="42")
    client(server).chat.completions.create(model="tuned", messages=ask(question, sign), max_tokens=64,  # type: ignore[arg-type]
                                           temperature=0.7, top_p=0.9, stop=["\n\n"], seed=7)
    sampling = {"temperature": 0.7, "top_p": 0.9, "stop": ["\n\n"], "seed": 7}
    assert [r.params for r in vlm.recorded(question)] == [  # the steps keep the server's --max-tokens
        {"max_tokens": 1024, **sampling}, {"max_tokens": 1024, **sampling}, {"max_tokens": 64, **sampling}]


def test_without_settings_each_call_uses_the_server_defaults(server: AgentServer, vlm: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (defaults)?"
    vlm.script(question, [step("Done.", final=True)], answer="42")
    client(server).chat.completions.create(model="tuned", messages=ask(question, sign))  # type: ignore[arg-type]
    assert [r.params for r in vlm.recorded(question)] == [{"max_tokens": 1024, "temperature": 0.0}] * 2


def test_max_completion_tokens_wins_over_max_tokens(server: AgentServer, vlm: FakeVLM) -> None:
    question = "What is two plus two (max_completion_tokens)?"
    vlm.script(question, [], answer="4")
    client(server).chat.completions.create(model="tuned:plain", messages=ask(question), max_tokens=50,  # type: ignore[arg-type]
                                           max_completion_tokens=20)
    assert vlm.recorded(question)[0].params["max_tokens"] == 20


@pytest.mark.parametrize(("scope", "step_cap", "final_cap"), [
    ("each-call", 40, 40),
    ("ignore", 1024, 1024),
])
def test_request_max_tokens_can_cap_each_call_or_nothing(vlm: FakeVLM, sign: Path, scope: str, step_cap: int,
                                                               final_cap: int) -> None:
    question = f"What number is on the sign (max_tokens {scope})?"
    vlm.script(question, [step("Read the sign.", ["ocr"]), step("Done.", final=True)], answer="42")
    with agent_server("tuned", backend="openai", endpoint=vlm.base_url, tools=["ocr"], request_max_tokens=scope) as running:
        client(running).chat.completions.create(model="tuned", messages=ask(question, sign), max_tokens=40)  # type: ignore[arg-type]
    assert [(r.purpose, r.params["max_tokens"]) for r in vlm.recorded(question)] == [
        ("rationale_step", step_cap), ("rationale_step", step_cap), ("final_answer", final_cap)]


def test_an_unknown_request_max_tokens_is_refused() -> None:
    from mmat_core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown request_max_tokens 'steps'; allowed: each-call, final-answer, ignore"):
        agent_server("demo", backend="offline", tools=[], request_max_tokens="steps")


# -- finish_reason: the answer's call, not the steps' ---------------------------------------------------


@pytest.fixture(scope="module")
def capping() -> Iterator[FakeVLM]:
    """The fake VLM cutting each reply at the request's max_tokens (finish_reason "length"), as servers do."""
    with FakeVLM(protocol="rr", honour_max_tokens=True) as fake:
        yield fake


LONG_ANSWER = "The sign on the wall says EXIT 42, in red capital letters above the door."


def test_an_answer_cut_at_max_tokens_reports_finish_reason_length(capping: FakeVLM, sign: Path) -> None:
    question = "What does the sign say (cut answer)?"
    capping.script(question, [], answer=LONG_ANSWER)
    with agent_server("tuned", backend="openai", endpoint=capping.base_url, tools=[], mode="plain") as running:
        response = client(running).chat.completions.create(model="tuned", messages=ask(question, sign), max_tokens=4)  # type: ignore[arg-type]
    assert response.choices[0].finish_reason == "length"
    assert response.choices[0].message.content == LONG_ANSWER[:16].strip()  # the answer as the model was cut
    assert "answer_cut_at_max_tokens" in response.model_extra["mmat_trace"]["notes"][0]  # type: ignore[index]


def test_an_answer_within_max_tokens_reports_stop(capping: FakeVLM, sign: Path) -> None:
    question = "What does the sign say (whole answer)?"
    capping.script(question, [], answer="EXIT 42")
    with agent_server("tuned", backend="openai", endpoint=capping.base_url, tools=[], mode="plain") as running:
        response = client(running).chat.completions.create(model="tuned", messages=ask(question, sign), max_tokens=4)  # type: ignore[arg-type]
    assert (response.choices[0].finish_reason, response.choices[0].message.content) == ("stop", "EXIT 42")


def test_an_rr_step_cut_at_max_tokens_does_not_make_the_answer_length(capping: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (cut step)?"
    capping.script(question, [step("Read every letter on the sign, one by one, then look at the number below it.", ["ocr"]),
                              step("Done.", final=True)], answer="42")
    with agent_server("tuned", backend="openai", endpoint=capping.base_url, tools=["ocr"],
                      request_max_tokens="each-call") as running:
        response = client(running).chat.completions.create(model="tuned", messages=ask(question, sign), max_tokens=20)  # type: ignore[arg-type]
    assert capping.recorded(question, "rationale_step")[0].finish_reason == "length"  # the first step was cut
    assert (response.choices[0].finish_reason, response.choices[0].message.content) == ("stop", "42")


def test_a_streamed_cut_answer_ends_with_finish_reason_length_and_the_log_keeps_it(capping: FakeVLM, sign: Path,
                                                                                  tmp_path: Path) -> None:
    question = "What does the sign say (cut, streamed)?"
    capping.script(question, [], answer=LONG_ANSWER)
    log = tmp_path / "answers.jsonl"
    with agent_server("tuned", backend="openai", endpoint=capping.base_url, tools=[], mode="orr", log_path=log) as running:
        chunks = list(client(running).chat.completions.create(model="tuned", messages=ask(question, sign),  # type: ignore[arg-type]
                                                              max_tokens=8, stream=True))
    assert [c.choices[0].finish_reason for c in chunks] == [None, "length"]
    assert json.loads(log.read_text())["finish_reason"] == "length"


# -- the default scope of a request's max_tokens: a harness's small cap leaves the RR steps whole ----------


READ_STEP = step("The number is printed on the sign, so I should read the text on it first.", ["ocr"])


@pytest.mark.parametrize(("scope", "ocr_ran"), [(None, True), ("final-answer", True), ("each-call", False)])
def test_a_harness_max_tokens_of_16_cuts_the_rr_steps_only_under_each_call(capping: FakeVLM, sign: Path,
                                                                           scope: str | None, ocr_ran: bool) -> None:
    # lmms-eval sends a task's max_new_tokens as max_tokens: 16 for AI2D and RealWorldQA.
    question = f"What number is on the sign (harness cap, {scope})?"
    capping.script(question, [READ_STEP, step("The sign says 42.", final=True)], answer="42")
    options = {} if scope is None else {"request_max_tokens": scope}
    with agent_server("tuned", backend="openai", endpoint=capping.base_url, tools=["ocr"], **options) as running:
        response = client(running).chat.completions.create(model="tuned", messages=ask(question, sign), max_tokens=16)  # type: ignore[arg-type]
    steps = response.model_extra["mmat_trace"]["steps"]  # type: ignore[index]
    assert (steps[0]["operators"] == ["ocr"]) is ocr_ran
    assert [r.finish_reason for r in capping.recorded(question, "rationale_step")][:1] == ["length" if not ocr_ran else "stop"]
    assert (response.choices[0].message.content, response.choices[0].finish_reason) == ("42", "stop")


@pytest.fixture(scope="module")
def offline() -> Iterator[AgentServer]:
    """An in-thread server over the offline stand-in, without tools."""
    from mmat_plugins.agent import OfflineChatModel

    model = OfflineChatModel()
    with AgentServer(lambda mode: AgentRuntime(model, mode=mode), model_name="m", mode="plain") as running:
        yield running


@pytest.mark.parametrize(("setting", "message"), [
    ({"temperature": 2.5}, "Invalid 'temperature': 2.5 is out of range; it must be between 0 and 2"),
    ({"temperature": -0.1}, "Invalid 'temperature': -0.1 is out of range; it must be between 0 and 2"),
    ({"top_p": 1.5}, "Invalid 'top_p': 1.5 is out of range; it must be between 0 and 1"),
    ({"max_tokens": 0}, "Invalid 'max_tokens': 0 is out of range; it must be at least 1"),
    ({"max_completion_tokens": -5}, "Invalid 'max_completion_tokens': -5 is out of range; it must be at least 1"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "Invalid 'stop': at most 4 sequences, got 5"),
    ({"stop": [""]}, "Invalid 'stop': a stop sequence must not be empty"),
])
def test_a_setting_out_of_range_is_an_openai_shaped_400_naming_it(offline: AgentServer, setting: dict[str, Any],
                                                                   message: str) -> None:
    response = httpx.post(f"{offline.base_url}/chat/completions", timeout=30,
                          json={"model": "m", "messages": [{"role": "user", "content": "Hi"}], **setting})
    assert response.status_code == 400
    assert response.json()["error"] == {"message": message, "type": "invalid_request_error",
                                        "param": next(iter(setting)), "code": "invalid_value"}


def test_the_openai_client_raises_bad_request_for_a_bad_temperature(offline: AgentServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(offline).chat.completions.create(model="m", messages=ask("Hi"), temperature=3)  # type: ignore[arg-type]
    assert caught.value.param == "temperature"  # type: ignore[attr-defined]


def test_a_setting_of_the_wrong_type_is_a_400(offline: AgentServer) -> None:
    response = httpx.post(f"{offline.base_url}/chat/completions", timeout=30,
                          json={"model": "m", "messages": [{"role": "user", "content": "Hi"}], "seed": "lucky"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "seed"


# -- a client that goes away ---------------------------------------------------------------------------


def _leave_mid_request(server: AgentServer, vlm: FakeVLM, question: str, image: Path) -> None:
    """Send a question over a raw socket, close it while the model is still thinking about the first
    step, wait until the server counted the cancel, then let the fake answer (to nobody)."""
    body = json.dumps({"model": "tuned", "messages": ask(question, image)}).encode()
    cancelled_before = server.cancelled
    vlm.hold(question)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(head + body)
        _wait_for(lambda: len(vlm.recorded(question)) == 1)  # the model is on its first step
    _wait_for(lambda: server.cancelled == cancelled_before + 1)
    vlm.release(question)


def test_a_departed_client_cancels_the_run_and_frees_its_slot(server: AgentServer, vlm: FakeVLM, tmp_path: Path) -> None:
    question = "What number is on the sign (departed)?"
    image = draw_sign(tmp_path / "departed.png", "EXIT 7")  # an image OCR has not seen on this server
    vlm.script(question, [step("Read the sign.", ["ocr"]), step("Done.", final=True)], answer="7")
    ocr_runs = (stats(server)["tool_cache"]["by_tool"].get("ocr") or {}).get("runs", 0)
    _leave_mid_request(server, vlm, question, image)
    assert stats(server)["running"] == 0
    # One slot and no waiting room: this answer proves the departed run gave its slot back.
    follow_up = "What is two plus two (after departed)?"
    vlm.script(follow_up, [], answer="4")
    assert client(server).chat.completions.create(model="tuned:plain", messages=ask(follow_up)).choices[0].message.content == "4"  # type: ignore[arg-type]
    assert [r.purpose for r in vlm.recorded(question)] == ["rationale_step"]  # no call after the cancel
    assert stats(server)["tool_cache"]["by_tool"]["ocr"]["runs"] == ocr_runs  # nor the OCR it would have run


def test_a_cancelled_run_is_logged_as_cancelled_not_as_an_answer(server: AgentServer, vlm: FakeVLM, sign: Path,
                                                                 log_file: Path) -> None:
    question = "What number is on the sign (cancel log)?"
    vlm.script(question, [step("Read the sign.", ["ocr"]), step("Done.", final=True)], answer="42")
    served = server.served
    _leave_mid_request(server, vlm, question, sign)
    record = next(r for r in map(json.loads, log_file.read_text().splitlines()) if r["question"] == question)
    assert record["status"] == "cancelled" and record["answer"] is None and "trace" not in record
    assert server.served == served


# -- the tool cache ------------------------------------------------------------------------------------


class CountedOCR:
    """The real OCR tool, counting its runs."""

    def __new__(cls, runs: list[str]) -> Any:
        base = get_plugin_manager().get("tool", "ocr")

        class Counted(base):  # type: ignore[misc, valid-type]
            async def run(self, args: dict[str, Any], ctx: Any) -> Any:
                runs.append(ctx.image.sha256 if ctx.image else "")
                return await super().run(args, ctx)

        return Counted()


def cached_server(vlm: FakeVLM, runs: list[str], size: int) -> AgentServer:
    """An ORR server (every operator runs on every question) over the fake, with the counted OCR."""
    model = OpenAIChatModel("tuned", vlm.base_url)
    cache = ToolResultCache(size)
    tools = [CountedOCR(runs)]
    return AgentServer(lambda mode: AgentRuntime(model, tools, mode=mode, tool_cache=cache),  # type: ignore[arg-type]
                       model_name="tuned", mode="orr", tool_cache=cache)


def ask_twice(running: AgentServer, vlm: FakeVLM, first: Path, second: Path, tag: str) -> list[Any]:
    answers = []
    for index, image in enumerate((first, second)):
        question = f"What does the sign say ({tag} {index})?"
        vlm.script(question, [], answer="EXIT")
        answers.append(client(running).chat.completions.create(model="tuned", messages=ask(question, image)))  # type: ignore[arg-type]
    return answers


def test_the_same_image_twice_runs_ocr_once(vlm: FakeVLM, sign: Path) -> None:
    runs: list[str] = []
    with cached_server(vlm, runs, 16) as running:
        first, second = ask_twice(running, vlm, sign, sign, "same image")
        counts = stats(running)["tool_cache"]
    calls = [a.model_extra["mmat_trace"]["steps"][0]["tool_calls"][0] for a in (first, second)]
    assert len(runs) == 1
    assert [c["cached"] for c in calls] == [False, True] and calls[0]["result"] == calls[1]["result"]
    assert counts["by_tool"] == {"ocr": {"runs": 1, "hits": 1}} and counts["entries"] == 1


def test_another_image_runs_ocr_again(vlm: FakeVLM, sign: Path, tmp_path: Path) -> None:
    runs: list[str] = []
    other = draw_sign(tmp_path / "other.png", "EXIT 9")
    with cached_server(vlm, runs, 16) as running:
        ask_twice(running, vlm, sign, other, "other image")
    assert len(runs) == 2 and runs[0] != runs[1]


def test_a_cache_of_size_zero_runs_ocr_for_every_question(vlm: FakeVLM, sign: Path) -> None:
    runs: list[str] = []
    with cached_server(vlm, runs, 0) as running:
        ask_twice(running, vlm, sign, sign, "no cache")
    assert len(runs) == 2


def test_the_cache_drops_the_least_recently_used_result_past_its_bound() -> None:
    cache = ToolResultCache(2)
    cache.put("a", {"text": "A"}, purpose="ocr")
    cache.put("b", {"text": "B"}, purpose="ocr")
    assert cache.get("a") == {"text": "A"}  # a is now the most recently used
    cache.put("c", {"text": "C"}, purpose="ocr")
    assert [cache.get(k) for k in ("a", "b", "c")] == [{"text": "A"}, None, {"text": "C"}]
    assert cache.stats() == {"entries": 2, "max_entries": 2, "hits": 3, "misses": 1, "evictions": 1,
                             "by_tool": {"ocr": {"runs": 3, "hits": 3}}}


def test_mmat_serve_reports_tool_cache_hits_at_its_stats_route(sign: Path) -> None:
    served = ServeProcess(["--model", "demo", "--backend", "offline", "--tools", "ocr", "--tool-cache-size", "8"])
    try:
        answers = [served.client().chat.completions.create(model="demo", messages=ask(q, sign))  # type: ignore[arg-type]
                   for q in ("What does the sign say?", "Which exit is it?")]
        report = httpx.get(f"{served.base_url}/mmat/stats", timeout=30).json()
    finally:
        served.stop()
    assert [a.choices[0].message.content for a in answers] == ["EXIT 42", "EXIT 42"]
    assert report["served"] == 2 and report["tool_cache"]["by_tool"] == {"ocr": {"runs": 1, "hits": 1}}


# -- a local transformers model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    """Plain mode over a tiny transformers VLM (random weights) in-process."""
    from mmat_plugins.agent import TransformersChatModel
    from mmat_plugins.trainers.tiny import build_tiny_vlm

    model = TransformersChatModel(str(build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "tiny")), max_new_tokens=6,
                                  device="cpu")
    with AgentServer(lambda mode: AgentRuntime(model, mode=mode), model_name="tiny", mode="plain") as running:
        yield running


def test_a_local_model_reports_the_tokens_of_its_prompt_and_reply(tiny: AgentServer, sign: Path) -> None:
    response = client(tiny).chat.completions.create(model="tiny", messages=ask("What is written here?", sign))  # type: ignore[arg-type]
    call = response.model_extra["mmat_trace"]["calls"][0]  # type: ignore[index]
    assert response.usage is not None and response.usage.prompt_tokens > 10  # the image's tokens and the question's
    assert 1 <= response.usage.completion_tokens <= 6
    assert (call["prompt_tokens"], call["completion_tokens"]) == (response.usage.prompt_tokens, response.usage.completion_tokens)


def test_a_local_model_stops_at_the_request_max_tokens(tiny: AgentServer, sign: Path) -> None:
    response = client(tiny).chat.completions.create(model="tiny", messages=ask("What is written here?", sign),  # type: ignore[arg-type]
                                                    max_tokens=2)
    assert response.usage is not None and 1 <= response.usage.completion_tokens <= 2


def test_a_local_model_samples_reproducibly_with_a_seed(tiny: AgentServer, sign: Path) -> None:
    def sample(seed: int) -> str | None:
        return client(tiny).chat.completions.create(model="tiny", messages=ask("Describe it.", sign),  # type: ignore[arg-type]
                                                    temperature=1.5, top_p=0.95, seed=seed).choices[0].message.content

    greedy = client(tiny).chat.completions.create(model="tiny", messages=ask("Describe it.", sign)).choices[0].message.content  # type: ignore[arg-type]
    draws = {sample(seed) for seed in (11, 12, 13)}
    assert sample(11) == sample(11)  # the same seed, the same draw
    assert len(draws | {greedy}) > 1  # it does sample: not every draw is the greedy reply


def _answer_with_eos(folder: Path, sign: Path, eos: list[int] | None, cap: int) -> Any:
    """One reply of a fresh tiny model whose end-of-sequence ids are ``eos`` (None: every token's)."""
    import asyncio

    from mmat_plugins.agent import GenerationSettings, TransformersChatModel
    from mmat_plugins.trainers.tiny import build_tiny_vlm

    model = TransformersChatModel(str(build_tiny_vlm(folder)), device="cpu")
    model._load()
    vocab = model._model.config.get_text_config().vocab_size
    model._model.generation_config.eos_token_id = list(range(vocab)) if eos is None else eos
    return asyncio.run(model.respond([{"role": "user", "content": "What is written here?"}], [sign],
                                     GenerationSettings(max_tokens=cap)))


def test_a_local_model_cut_at_max_tokens_reports_length(tmp_path: Path, sign: Path) -> None:
    reply = _answer_with_eos(tmp_path / "tiny", sign, [10**6], cap=3)  # an id it never generates: nothing ends it
    assert (reply.completion_tokens, reply.finish_reason) == (3, "length")


def test_a_local_model_that_ends_on_its_eos_token_at_the_cap_reports_stop(tmp_path: Path, sign: Path) -> None:
    reply = _answer_with_eos(tmp_path / "tiny", sign, None, cap=1)  # every token ends it: the one token is an EOS
    assert (reply.completion_tokens, reply.finish_reason) == (1, "stop")


class GenerateOnlyModel:
    """A third-party chat model with only ``generate`` (no ``respond``, no token counts)."""

    name = "generate-only"

    async def generate(self, messages: Any, images: Any) -> str:
        return "Paris. Also, some rambling after the stop sequence."

    async def aclose(self) -> None:
        pass


def test_a_model_with_only_generate_still_answers_cut_at_the_stop_sequence() -> None:
    model = GenerateOnlyModel()
    with AgentServer(lambda mode: AgentRuntime(model, mode=mode), model_name="g", mode="plain") as running:
        response = client(running).chat.completions.create(model="g", messages=ask("Capital of France?"), stop=[". Also"])  # type: ignore[arg-type]
    assert response.choices[0].message.content == "Paris"
    assert response.usage is not None and response.usage.total_tokens == 0
