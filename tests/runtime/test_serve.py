"""``mmat serve``: the agent behind an OpenAI-compatible endpoint, queried with the official client.

The server runs as a real ``mmat serve`` subprocess on 127.0.0.1; the tuned model behind it is the
scripted fake VLM (RR protocol) reached through the openai backend, and the operators it asks for
run with mmat's real tools (OCR reads a drawn sign). Plain mode also runs with a tiny transformers
model in-process, and the offline stand-in answers without any model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from mmat_plugins.agent import AgentRuntime
from mmat_plugins.agent.serve import AgentServer, host_allowed
from mmat_plugins.agent.wire import CONTEXT_HEADER

from mmat_core import prompts
from mmat_core.models import Trace
from tests.fakes.vlm_server import FakeVLM, Fault, step

ROOT = Path(__file__).resolve().parents[2]
MMAT = [sys.executable, "-m", "mmat_core"]


class ServeProcess:
    """``mmat serve ...`` in a subprocess; ``base_url`` once it printed its address."""

    def __init__(self, args: Sequence[str]) -> None:
        self.process = subprocess.Popen([*MMAT, "serve", "--port", "0", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.output: list[str] = []
        found = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if "listening on " in line:
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError("mmat serve did not start:\n" + "".join(self.output))
        line = next(line for line in self.output if "listening on " in line)
        self.base_url = line.split("listening on ", 1)[1].split()[0]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, timeout=120)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def ask(text: str, image: Path | None = None, url: str | None = None) -> list[dict[str, Any]]:
    """One user message: the image (as a data URL unless ``url`` is given), then the text."""
    parts: list[dict[str, Any]] = []
    if image is not None or url is not None:
        parts.append({"type": "image_url", "image_url": {"url": url or data_url(image)}})  # type: ignore[arg-type]
    parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def draw_sign(path: Path, text: str) -> Path:
    """A white sign with ``text`` drawn large enough for OCR."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (360, 120), "white")
    ImageDraw.Draw(image).text((20, 30), text, fill="black", font=ImageFont.load_default(size=48))
    image.save(path)
    return path


@pytest.fixture(scope="module")
def sign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A drawn sign reading 'EXIT 42'."""
    return draw_sign(tmp_path_factory.mktemp("sign") / "sign.png", "EXIT 42")


@pytest.fixture(scope="module")
def vlm() -> Iterator[FakeVLM]:
    """The scripted tuned model (RR protocol) the server's openai backend talks to."""
    with FakeVLM(protocol="rr") as fake:
        yield fake


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-log") / "answers.jsonl"


@pytest.fixture(scope="module")
def served(vlm: FakeVLM, log_file: Path) -> Iterator[ServeProcess]:
    """``mmat serve --mode rr`` over the fake, with OCR, face detection and local search."""
    server = ServeProcess(["--model", "tuned", "--backend", "openai", "--base-url", vlm.base_url, "--mode", "rr",
                           "--tools", "ocr,face_detection", "--search", "local", "--log", str(log_file)])
    yield server
    # It stops cleanly on SIGTERM, closing the model client the three modes' runtimes share.
    assert server.stop() == 0 and "Traceback" not in "".join(server.output), "".join(server.output)


# -- answers ------------------------------------------------------------------------------------


def test_models_lists_the_served_name_and_one_name_per_mode(served: ServeProcess) -> None:
    assert [m.id for m in served.client().models.list()] == ["tuned", "tuned:rr", "tuned:orr", "tuned:plain"]


def test_rr_answer_comes_after_mmat_runs_the_operator_the_model_asked_for(served: ServeProcess, vlm: FakeVLM,
                                                                          sign: Path) -> None:
    question = "What number is on the sign (rr)?"
    vlm.script(question, [step("Read the sign.", ["ocr"]), step("The sign says 42.", final=True)], answer="42")
    response = served.client().chat.completions.create(model="tuned", messages=ask(question, sign))  # type: ignore[arg-type]
    trace = response.model_extra["mmat_trace"]  # type: ignore[index]
    ocr = trace["steps"][0]["tool_calls"][0]
    second_step = vlm.recorded(question, "rationale_step")[1]
    assert response.choices[0].message.content == "42"
    assert trace["mode"] == "rr" and [s["signal"] for s in trace["steps"]] == ["continue", "end"]
    assert ocr["name"] == "ocr" and ocr["error"] is None and "EXIT 42" in ocr["result"]
    assert second_step.messages[-1]["text"] == prompts.observation([("ocr", ocr["result"])])
    assert vlm.recorded(question, "rationale_step")[0].images == 1


def test_rag_query_is_answered_by_the_search_backend(served: ServeProcess, vlm: FakeVLM, sign: Path) -> None:
    question = "Which woman first piloted this kind of spacecraft?"
    vlm.script(question, [step("Look it up.", rag="first woman to pilot the Space Shuttle"),
                          step("It was Eileen Collins.", final=True)], answer="Eileen Collins")
    response = served.client().chat.completions.create(model="tuned", messages=ask(question, sign))  # type: ignore[arg-type]
    rag = response.model_extra["mmat_trace"]["steps"][0]["rag"]  # type: ignore[index]
    assert response.choices[0].message.content == "Eileen Collins"
    assert rag["query"] == "first woman to pilot the Space Shuttle" and rag["result"].startswith("[1] Eileen Collins")


def test_orr_mode_runs_every_operator_first_and_answers_in_one_turn(served: ServeProcess, vlm: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (orr)?"
    vlm.script(question, [], answer="42")
    response = served.client().chat.completions.create(model="tuned:orr", messages=ask(question, sign))  # type: ignore[arg-type]
    trace = response.model_extra["mmat_trace"]  # type: ignore[index]
    request = vlm.recorded(question)
    assert response.choices[0].message.content == "42"
    assert trace["mode"] == "orr" and [c["name"] for c in trace["steps"][0]["tool_calls"]] == ["ocr", "face_detection"]
    assert [r.purpose for r in request] == ["orr_answer"]
    assert "<|begin_api_invoke|>ocr<|end_api_invoke|>" in request[0].messages[-1]["text"]
    assert "EXIT 42" in request[0].messages[-1]["text"]


def test_plain_mode_sends_the_question_alone(served: ServeProcess, vlm: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (plain)?"
    vlm.script(question, [], answer="41")
    response = served.client().chat.completions.create(model="tuned:plain", messages=ask(question, sign))  # type: ignore[arg-type]
    request = vlm.recorded(question)
    assert response.choices[0].message.content == "41"
    assert response.model_extra["mmat_trace"]["steps"] == []  # type: ignore[index]
    assert [(r.purpose, r.images, [m["role"] for m in r.messages]) for r in request] == [("plain_answer", 1, ["user"])]


def test_stream_true_gets_the_answer_as_one_chunk(served: ServeProcess, vlm: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (stream)?"
    vlm.script(question, [step("Done.", final=True)], answer="42")
    chunks = list(served.client().chat.completions.create(model="tuned", messages=ask(question, sign), stream=True))  # type: ignore[arg-type]
    assert [c.choices[0].delta.content for c in chunks] == ["42", None]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_earlier_turns_go_before_the_question_and_system_messages_are_not_sent(served: ServeProcess, vlm: FakeVLM,
                                                                               sign: Path) -> None:
    question = "And what number is on it (multi-turn)?"
    vlm.script(question, [step("Done.", final=True)], answer="42")
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Is there a sign?"}, {"role": "assistant", "content": "Yes."},
                *ask(question, sign)]
    response = served.client().chat.completions.create(model="tuned", messages=messages)  # type: ignore[arg-type]
    first = vlm.recorded(question, "rationale_step")[0].messages
    assert response.model_extra["mmat_trace"]["ignored_messages"] == ["system"]  # type: ignore[index]
    assert "You are terse." not in json.dumps(first)
    assert first[1]["text"] == prompts.first_turn(f"{CONTEXT_HEADER}user: Is there a sign?\nassistant: Yes.\n\n{question}", "")


def test_a_local_file_url_is_accepted_on_loopback(served: ServeProcess, vlm: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (file url)?"
    vlm.script(question, [step("Read it.", ["ocr"]), step("Done.", final=True)], answer="42")
    response = served.client().chat.completions.create(model="tuned", messages=ask(question, url=sign.as_uri()))  # type: ignore[arg-type]
    assert "EXIT 42" in response.model_extra["mmat_trace"]["steps"][0]["tool_calls"][0]["result"]  # type: ignore[index]


def test_log_file_holds_each_answer_with_its_full_trace(served: ServeProcess, vlm: FakeVLM, sign: Path, log_file: Path) -> None:
    question = "What number is on the sign (log)?"
    vlm.script(question, [step("Read it.", ["ocr"]), step("Done.", final=True)], answer="42")
    response = served.client().chat.completions.create(model="tuned", messages=ask(question, sign))  # type: ignore[arg-type]
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    record = next(r for r in records if r["id"] == response.id)
    assert record["answer"] == "42" and record["question"] == question and record["mode"] == "rr"
    assert Trace.model_validate(record["trace"]).steps[0].tool_calls[0].name == "ocr"
    assert record["trace"]["sample"]["images"][0]["sha256"]


def test_mmat_constraint_is_kept_apart_from_the_question(served: ServeProcess, vlm: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (constraint)?"
    constraint = "Answer the question using a single word or phrase."
    vlm.script(question, [step("Done.", final=True)], answer="42")
    served.client().chat.completions.create(model="tuned", messages=ask(question, sign),  # type: ignore[arg-type]
                                            extra_body={"mmat_constraint": constraint})
    assert vlm.recorded(question, "rationale_step")[0].messages[1]["text"] == prompts.first_turn(question, "\n" + constraint)
    assert vlm.recorded(question, "final_answer")[0].messages[-1]["text"] == prompts.final_turn(question)


def test_health_and_one_model_by_name(served: ServeProcess) -> None:
    assert httpx.get(served.base_url.removesuffix("/v1") + "/health").json() == {"status": "ok", "model": "tuned", "mode": "rr"}
    assert served.client().models.retrieve("tuned:orr").id == "tuned:orr"
    assert httpx.get(f"{served.base_url}/models/other").status_code == 404


def test_concurrent_questions_each_get_their_own_image_and_answer(served: ServeProcess, vlm: FakeVLM, tmp_path: Path) -> None:
    numbers = [17, 23, 42, 58, 61, 76]
    for number in numbers:
        vlm.script(f"Which exit is this (concurrent {number})?", [step("Read it.", ["ocr"]), step("Done.", final=True)],
                   answer=str(number))

    async def ask_all() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=served.base_url, api_key="unused", max_retries=0, timeout=120)
        async with client:
            return await asyncio.gather(*(client.chat.completions.create(  # type: ignore[call-overload]
                model="tuned", messages=ask(f"Which exit is this (concurrent {n})?", draw_sign(tmp_path / f"{n}.png", f"EXIT {n}")))
                for n in numbers))

    responses = asyncio.run(ask_all())
    assert [r.choices[0].message.content for r in responses] == [str(n) for n in numbers]
    assert [r.model_extra["mmat_trace"]["steps"][0]["tool_calls"][0]["result"] for r in responses] == [f"EXIT {n}" for n in numbers]


# -- errors -------------------------------------------------------------------------------------


def test_missing_messages_is_a_400_naming_the_field(served: ServeProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        served.client().chat.completions.create(model="tuned", messages=[])
    assert caught.value.status_code == 400 and "messages" in caught.value.message


def test_a_body_without_messages_is_a_400(served: ServeProcess) -> None:
    response = httpx.post(f"{served.base_url}/chat/completions", json={"model": "tuned"})
    assert response.status_code == 400
    assert response.json()["error"] == {"message": "'messages' is required", "type": "invalid_request_error",
                                        "param": "messages", "code": None}


def test_a_body_that_is_not_json_is_a_400(served: ServeProcess) -> None:
    response = httpx.post(f"{served.base_url}/chat/completions", content=b"{not json",
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_an_image_that_does_not_decode_is_a_400(served: ServeProcess) -> None:
    bogus = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    with pytest.raises(openai.BadRequestError) as caught:
        served.client().chat.completions.create(model="tuned", messages=ask("What is it?", url=bogus))  # type: ignore[arg-type]
    assert "not a usable image (image_corrupt)" in caught.value.message
    assert caught.value.body["param"] == "messages.0.content.0"  # type: ignore[index]


def test_an_http_image_url_is_refused_with_a_way_out(served: ServeProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        served.client().chat.completions.create(model="tuned", messages=ask("What?", url="https://example.com/a.png"))  # type: ignore[arg-type]
    assert "image URLs are refused" in caught.value.message and "--allow-remote-images" in caught.value.message


def test_an_unknown_model_is_a_404_listing_the_served_names(served: ServeProcess) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        served.client().chat.completions.create(model="gpt-4o", messages=ask("What?"))  # type: ignore[arg-type]
    assert caught.value.status_code == 404 and "tuned, tuned:rr, tuned:orr, tuned:plain" in caught.value.message
    assert caught.value.code == "model_not_found"


def test_a_failed_model_call_is_a_500_with_the_reason(served: ServeProcess, vlm: FakeVLM, sign: Path) -> None:
    question = "What number is on the sign (fault)?"
    vlm.script(question, [Fault(status=400)], answer="x")
    with pytest.raises(openai.InternalServerError) as caught:
        served.client().chat.completions.create(model="tuned", messages=ask(question, sign))  # type: ignore[arg-type]
    assert caught.value.status_code == 500 and "the agent run failed: BadRequestError" in caught.value.message


def test_a_foreign_host_header_is_refused(served: ServeProcess) -> None:
    response = httpx.get(f"{served.base_url}/models", headers={"Host": "evil.example:80"})
    assert response.status_code == 403 and "Host header" in response.json()["error"]["message"]


def test_an_unknown_route_answers_openai_shaped_json(served: ServeProcess) -> None:
    response = httpx.get(f"{served.base_url}/embeddings")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(("header", "bound", "allowed"), [
    ("127.0.0.1:8300", "127.0.0.1", True),
    ("localhost:8300", "127.0.0.1", True),
    ("[::1]:8300", "127.0.0.1", True),
    ("127.0.0.1:9999", "127.0.0.1", False),
    ("evil.example", "127.0.0.1", False),
    ("10.1.2.3:8300", "0.0.0.0", True),
    ("evil.example:8300", "0.0.0.0", False),
    ("gpu-node-7:8300", "0.0.0.0", False),
])
def test_host_header_check(header: str, bound: str, allowed: bool) -> None:
    assert host_allowed(header, bound, 8300) is allowed


def test_allow_host_admits_a_named_host() -> None:
    assert host_allowed("gpu-node-7:8300", "0.0.0.0", 8300, ["gpu-node-7"])


@pytest.fixture(scope="module")
def strict() -> Iterator[AgentServer]:
    """An in-thread server over the offline stand-in, without tools, refusing local image paths."""
    from mmat_plugins.agent import OfflineChatModel
    from mmat_plugins.agent.wire import ImagePolicy

    model = OfflineChatModel()
    with AgentServer(lambda mode: AgentRuntime(model, mode=mode), model_name="m", mode="plain",
                     images=ImagePolicy(local_files=False)) as server:
        yield server


def post(server: AgentServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)


@pytest.mark.parametrize(("messages", "extra", "message"), [
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], {},
     "the last message must be the user's question, not 'assistant'"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], {},
     "unsupported content part type 'input_audio'; allowed: text, image_url"),
    ([{"role": "tool", "content": "42"}, {"role": "user", "content": "Hi"}], {}, "tool messages are not accepted"),
    ([{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]},
      {"role": "user", "content": "Hi"}], {}, "images are accepted in user messages only"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]}], {},
     "the last user message has no text"),
    ([{"role": "user", "content": "Hi"}], {"n": 2}, "only n=1 is supported"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}},
                                   {"type": "text", "text": "Hi"}]}], {}, "must be base64-encoded"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}},
                                   {"type": "text", "text": "Hi"}]}], {}, "not valid base64"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://host/a.png"}},
                                   {"type": "text", "text": "Hi"}]}], {}, "unsupported image URL scheme 'ftp'"),
])
def test_a_malformed_chat_is_a_400_that_says_what_is_wrong(strict: AgentServer, messages: list[dict[str, Any]],
                                                           extra: dict[str, Any], message: str) -> None:
    response = post(strict, {"model": "m", "messages": messages, **extra})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_a_local_path_is_refused_when_local_images_are_off(strict: AgentServer, sign: Path) -> None:
    for url in (str(sign), sign.as_uri()):
        response = post(strict, {"model": "m", "messages": ask("What?", url=url)})
        assert response.status_code == 400 and "local image paths are refused" in response.json()["error"]["message"]


def test_an_image_url_given_as_a_bare_string_is_read(strict: AgentServer, sign: Path) -> None:
    content = [{"type": "image_url", "image_url": data_url(sign)}, {"type": "text", "text": "What?"}]
    response = post(strict, {"model": "m", "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "unknown"


def test_the_image_files_of_a_request_are_deleted_after_its_answer(strict: AgentServer, sign: Path) -> None:
    response = post(strict, {"model": "m", "messages": ask("What?", sign)})
    assert response.status_code == 200
    assert strict._workdir is not None and list(strict._workdir.iterdir()) == []


# -- concurrency (in-thread server, a model that waits at a gate) ------------------------------------


class GatedModel:
    """A chat model whose replies wait until the test opens the gate; counts calls in progress."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.inside = 0

    async def generate(self, messages: Sequence[dict[str, str]], images: Sequence[Path]) -> str:
        self.inside += 1
        await asyncio.to_thread(self.gate.wait, 30)
        return "done"

    async def aclose(self) -> None:
        self.gate.set()


def _wait_for(condition: Any) -> None:
    event = threading.Event()
    for _ in range(600):
        if condition():
            return
        event.wait(0.05)
    raise AssertionError("condition not reached")


def test_requests_run_concurrently_up_to_the_limit_and_the_overflow_gets_429() -> None:
    model = GatedModel()
    server = AgentServer(lambda mode: AgentRuntime(model, mode=mode), model_name="gated", mode="plain",
                         concurrency=2, max_waiting=0)
    with server, httpx.Client(base_url=server.base_url, timeout=60) as client:
        results: list[int] = []
        body = {"model": "gated", "messages": [{"role": "user", "content": "Hi?"}]}
        threads = [threading.Thread(target=lambda: results.append(client.post("/chat/completions", json=body).status_code))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        _wait_for(lambda: model.inside == 2)  # both are inside the model at once
        overflow = client.post("/chat/completions", json=body)
        model.gate.set()
        for thread in threads:
            thread.join(30)
    assert overflow.status_code == 429 and overflow.headers["Retry-After"] == "1"
    assert overflow.json()["error"]["type"] == "rate_limit_error"
    assert results == [200, 200]


def test_a_bad_image_is_refused_at_once_even_when_every_slot_is_busy() -> None:
    model = GatedModel()
    server = AgentServer(lambda mode: AgentRuntime(model, mode=mode), model_name="gated", mode="plain",
                         concurrency=1, max_waiting=0)
    with server, httpx.Client(base_url=server.base_url, timeout=60) as client:
        busy = threading.Thread(target=client.post, args=("/chat/completions",),
                                kwargs={"json": {"model": "gated", "messages": [{"role": "user", "content": "Hi?"}]}})
        busy.start()
        _wait_for(lambda: model.inside == 1)
        bad = client.post("/chat/completions", json={"model": "gated", "messages": ask("Hi?", url="data:image/png;base64,AAAA")})
        model.gate.set()
        busy.join(30)
    assert bad.status_code == 400 and "not a usable image" in bad.json()["error"]["message"]


def test_a_client_that_times_out_gets_its_run_cancelled_and_logged_as_such(tmp_path: Path) -> None:
    model = GatedModel()
    log = tmp_path / "answers.jsonl"
    server = AgentServer(lambda mode: AgentRuntime(model, mode=mode), model_name="gated", mode="plain", log_path=log)
    with server:
        body = {"model": "gated", "messages": [{"role": "user", "content": "Hi?"}]}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
        _wait_for(lambda: server.cancelled == 1)
        model.gate.set()
        running = server.running
    assert json.loads(log.read_text())["status"] == "cancelled" and server.served == 0 and running == 0


def test_an_unknown_tool_stops_mmat_serve_before_it_listens() -> None:
    result = subprocess.run([*MMAT, "serve", "--backend", "offline", "--model", "demo", "--tools", "ocrr", "--port", "0"],
                            check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Unknown tool 'ocrr'. Did you mean 'ocr'?" in result.stderr
    assert "listening" not in result.stdout


# -- other backends -------------------------------------------------------------------------------


def test_plain_mode_answers_from_a_tiny_transformers_model_in_process(tmp_path: Path, sign: Path) -> None:
    from mmat_plugins.agent import TransformersChatModel
    from mmat_plugins.trainers.tiny import build_tiny_vlm

    model = TransformersChatModel(str(build_tiny_vlm(tmp_path / "tiny")), max_new_tokens=4, device="cpu")
    with AgentServer(lambda mode: AgentRuntime(model, mode=mode), model_name="tiny", mode="plain") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        response = client.chat.completions.create(model="tiny", messages=ask("What is written here?", sign))  # type: ignore[arg-type]
    assert isinstance(response.choices[0].message.content, str)
    assert response.model_extra["mmat_trace"]["mode"] == "plain"  # type: ignore[index]
    assert response.model_extra["mmat_trace"]["status"] != "failed"  # type: ignore[index]


def test_offline_backend_answers_with_what_ocr_read(sign: Path) -> None:
    server = ServeProcess(["--model", "demo", "--backend", "offline", "--tools", "ocr"])
    try:
        response = server.client().chat.completions.create(model="demo", messages=ask("What does the sign say?", sign))  # type: ignore[arg-type]
    finally:
        status = server.stop()
    assert response.choices[0].message.content == "EXIT 42"
    assert status == 0 and "Traceback" not in "".join(server.output)
    assert response.model_extra["mmat_trace"]["steps"][0]["operators"] == ["ocr"]  # type: ignore[index]


def test_mmat_serve_caps_only_the_answer_with_a_request_max_tokens_by_default() -> None:
    from click.testing import CliRunner
    from mmat_plugins.agent.command import serve

    from mmat_core.cli import main

    option = next(p for p in serve.params if p.name == "request_max_tokens")
    assert option.default == "final-answer"
    assert "[default: final-answer]" in CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output


def test_mmat_serve_with_a_local_model_the_hub_lacks_stops_at_once_in_one_line(tmp_path: Path) -> None:
    from tests.fakes.hub_server import FakeHub

    with FakeHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "hub-cache")}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            env.pop(name, None)
        result = subprocess.run([*MMAT, "serve", "--model", "tiny-vlm", "--backend", "transformers", "--port", "0"],
                                check=False, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "listening" not in result.stdout
    assert result.stderr.startswith("Error: model: 'tiny-vlm' is not a folder here and the Hugging Face Hub has no model")
    assert "`mmat tiny-model tiny-vlm`" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert hub.paths == ["/api/models/tiny-vlm"]  # one request, no retries


@pytest.mark.parametrize(("backend", "endpoint", "message"), [
    ("openai", None, "the openai backend needs --base-url"),
    ("transformers", "http://127.0.0.1:9/v1", "--base-url applies to the openai backend"),
    ("vllm", None, "unknown backend 'vllm'; allowed: auto, openai, transformers, offline"),
])
def test_a_backend_that_contradicts_the_options_is_refused(backend: str, endpoint: str | None, message: str) -> None:
    from mmat_plugins.agent import open_chat_model

    from mmat_core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        open_chat_model("m", endpoint=endpoint, backend=backend)
