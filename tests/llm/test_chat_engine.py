"""ChatEngine, mmat's engine as a library: many chat requests through the cache, scheduler and
backends, against the real fake OpenAI and Anthropic servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel

from mmat_core import ChatEngine, ChatRowError, ConfigError
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply

PRICES = {"gpt-4o": {"input": 1.0, "output": 2.0}}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI server that echoes the last user text (``echo: ...``)."""
    with FakeOpenAIServer() as fake:
        yield fake


def count_in_flight(server: FakeOpenAIServer) -> dict[str, int]:
    """Counts the requests the server is holding at once (each waits its latency there)."""
    state = {"now": 0, "max": 0}
    wait = server.wait_latency

    async def counting(reply: Reply) -> None:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        try:
            await wait(reply)
        finally:
            state["now"] -= 1

    server.wait_latency = counting  # type: ignore[method-assign]
    return state


def engine(server: FakeOpenAIServer, **kwargs: Any) -> ChatEngine:
    """A ChatEngine on the fake server, no progress display, no backoff waits."""
    llm_engine = {"backoff_base_s": 0.0, "prices": PRICES, **kwargs.pop("llm_engine", {})}
    kwargs.setdefault("progress", False)
    return ChatEngine("openai", model="gpt-4o", base_url=server.base_url, llm_engine=llm_engine, **kwargs)


def png(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def sent_images(request: RecordedRequest) -> list[bytes]:
    """The images of a chat request's last user message, decoded from their data URLs."""
    content = [m for m in request.body["messages"] if m["role"] == "user"][-1]["content"]
    return [base64.b64decode(part["image_url"]["url"].split(",", 1)[1]) for part in content if part["type"] == "image_url"]


def test_answers_come_back_in_input_order_when_replies_arrive_out_of_order(server):
    # Early rows are answered last: the results must still be in input order.
    server.responder = lambda request: Reply.text(f"echo: {request.user_text()}",  # type: ignore[call-arg]
                                                  latency=0.002 * (20 - int(request.user_text().split()[1])))
    with engine(server) as chat:
        answers = chat.run([f"row {n}" for n in range(20)])
    assert [a.index for a in answers] == list(range(20))
    assert answers.texts() == [f"echo: row {n}" for n in range(20)]


def test_images_given_as_path_bytes_and_pil_reach_the_server_as_image_parts(server, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png((200, 0, 0)))
    blue = png((0, 0, 200))
    green = Image.new("RGB", (5, 7), (0, 200, 0))
    with engine(server) as chat:
        [answer] = chat.run([{"prompt": "What colours?", "images": [path, blue, green]}])
    assert answer.ok, answer.error
    request = server.completions()[0]
    images = sent_images(request)
    assert images[:2] == [path.read_bytes(), blue]
    assert Image.open(io.BytesIO(images[2])).getpixel((0, 0)) == (0, 200, 0)
    content = request.body["messages"][-1]["content"]
    assert [part["type"] for part in content] == ["image_url", "image_url", "image_url", "text"]
    assert content[-1]["text"] == "What colours?"


def test_images_inside_messages_are_sent_where_they_are_placed(server, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png((200, 0, 0)))
    row = [{"role": "system", "content": "Be brief."},
           {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image", "image": str(path)}]}]
    with engine(server) as chat:
        [answer] = chat.run([row])
    assert answer.ok, answer.error
    messages = server.completions()[0].body["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert [part["type"] for part in messages[1]["content"]] == ["text", "image_url"]


def test_model_calls_in_flight_never_exceed_concurrency(server):
    server.latency = 0.03
    in_flight = count_in_flight(server)
    with engine(server, concurrency=3) as chat:
        answers = chat.run([f"q{n}" for n in range(24)])
    assert all(a.ok for a in answers)
    assert in_flight["max"] == 3


def test_rows_in_flight_follow_the_call_slots(server):
    with engine(server, concurrency=5) as chat:
        assert chat.rows_in_flight == 10


def test_rate_limits_and_server_errors_are_retried_until_answered(server):
    server.queue(Reply.rate_limited(retry_after=0.01), Reply.server_error(), Reply.text("at last"))  # type: ignore[call-arg]
    with engine(server) as chat:
        [answer] = chat.run(["hello"])
    assert answer.text == "at last"
    assert answer.attempts == 3
    assert [r.status for r in server.completions()] == [429, 500, 200]


def test_the_summary_counts_requests_retries_and_rate_limits(server):
    server.queue(Reply.rate_limited(retry_after=0.01), Reply.text("a"), Reply.text("b"))  # type: ignore[call-arg]
    with engine(server, concurrency=1) as chat:
        answers = chat.run(["one", "two"])
    summary = answers.summary
    assert (summary.rows, summary.answered, summary.failed) == (2, 2, 0)
    assert (summary.requests, summary.retries, summary.rate_limited) == (3, 1, 1)
    assert "2 rows: 2 answered" in str(summary)


def test_a_rerun_with_the_same_cache_makes_no_request(server, tmp_path):
    rows = [f"question {n}" for n in range(6)]
    with engine(server, cache=tmp_path / "cache") as chat:
        first = chat.run(rows)
    sent = len(server.completions())
    with engine(server, cache=tmp_path / "cache") as chat:
        second = chat.run(rows)
    assert sent == 6
    assert len(server.completions()) == sent
    assert second.texts() == first.texts()
    assert all(a.cached for a in second)
    assert (second.summary.requests, second.summary.cached, second.summary.cost_usd) == (0, 6, 0.0)


def test_cost_is_priced_per_row_and_summed(server):
    server.responder = lambda request: Reply.text("ok", prompt_tokens=1000, completion_tokens=500)  # type: ignore[call-arg]
    with engine(server) as chat:
        answers = chat.run(["a", "b", "c"])
    per_row = (1000 * 1.0 + 500 * 2.0) / 1_000_000
    assert [a.usage.cost_usd for a in answers] == pytest.approx([per_row] * 3)
    assert answers.summary.cost_usd == pytest.approx(3 * per_row)
    assert answers.summary.prompt_tokens == 3000


def test_a_refused_row_records_its_error_and_the_others_are_answered(server):
    server.responder = lambda request: (Reply.status(400, "bad request") if "bad" in request.user_text()
                                        else Reply.text(f"echo: {request.user_text()}"))  # type: ignore[call-arg]
    with engine(server) as chat:
        answers = chat.run(["good 1", "bad", "good 2"])
    assert [a.ok for a in answers] == [True, False, True]
    assert answers[1].error_type == "PermanentError"
    assert "400" in (answers[1].error or "")
    assert answers.summary.errors == {"PermanentError": 1}


def test_on_error_raise_stops_the_run_at_the_first_failed_row(server):
    server.responder = lambda request: Reply.status(400, "bad request")
    with engine(server, on_error="raise") as chat, pytest.raises(ChatRowError) as raised:
        chat.run(["a"])
    assert raised.value.index == 0
    assert "PermanentError" in str(raised.value)


def test_retries_exhausted_end_as_the_rows_error(server):
    server.responder = lambda request: Reply.server_error()
    with engine(server, max_attempts=2) as chat:
        [answer] = chat.run(["a"])
    assert answer.error_type == "Overloaded"
    assert "gave up after 2 attempts" in (answer.error or "")
    assert len(server.completions()) == 2


class Colour(BaseModel):
    name: str
    hex: str


def test_a_pydantic_response_format_is_sent_as_a_schema_and_parsed(server):
    server.queue(Reply.json({"name": "red", "hex": "#ff0000"}))
    with engine(server, response_format=Colour) as chat:
        [answer] = chat.run(["Name a colour."])
    assert answer.parsed == Colour(name="red", hex="#ff0000")
    body = server.completions()[0].body
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["name", "hex"]


def test_a_reply_that_misses_the_response_format_is_the_rows_error(server):
    server.responder = lambda request: Reply.json({"name": "red"})
    with engine(server, response_format=Colour) as chat:
        [answer] = chat.run(["Name a colour."])
    assert answer.error_type == "ResponseFormatError"
    assert "hex" in (answer.error or "")
    assert answer.text is not None  # the reply is kept: it was paid for


def test_a_directory_given_as_an_image_fails_its_row_before_any_request(server, tmp_path):
    with engine(server) as chat:
        answers = chat.run([{"prompt": "x", "images": [tmp_path]}, "fine"])
    assert answers[0].error_type == "ImageError"
    assert "image_not_a_file" in (answers[0].error or "")
    assert answers[1].ok
    assert len(server.completions()) == 1


def test_bytes_that_are_no_image_fail_their_row(server):
    with engine(server) as chat:
        [answer] = chat.run([{"prompt": "x", "images": [b"not a picture"]}])
    assert answer.error_type == "ImageError"
    assert server.completions() == []


def test_a_huge_row_fails_before_any_request(server):
    with engine(server, max_row_chars=10_000) as chat:
        answers = chat.run(["x" * 10_001, "small"])
    assert answers[0].error_type == "RowError"
    assert "row_too_long" in (answers[0].error or "")
    assert [r.user_text() for r in server.completions()] == ["small"]


def test_rows_of_the_wrong_shape_fail_alone(server):
    with engine(server) as chat:
        answers = chat.run([42, {"promt": "typo"}, [{"role": "robot", "content": "x"}], "ok"])
    assert [a.error_type for a in answers] == ["RowError", "RowError", "RowError", None]
    assert "promt" in (answers[1].error or "")
    assert len(server.completions()) == 1


def test_duplicate_rows_are_sent_once(server):
    server.latency = 0.01
    with engine(server, concurrency=4) as chat:
        answers = chat.run(["same question"] * 12)
    assert len(server.completions()) == 1
    assert sum(a.cached for a in answers) == 11
    assert answers.summary.cached == 11


def test_arun_is_awaitable_from_another_event_loop(server):
    with engine(server) as chat:
        answers = asyncio.run(chat.arun(["a", "b"]))
    assert answers.texts() == ["echo: a", "echo: b"]


def test_a_generator_of_rows_is_consumed_lazily(server):
    with engine(server) as chat:
        answers = chat.run(f"row {n}" for n in range(5))
    assert answers.texts() == [f"echo: row {n}" for n in range(5)]


def test_an_unknown_backend_option_is_a_config_error_naming_it(server):
    with pytest.raises(ConfigError, match="modle"):
        ChatEngine("openai", modle="gpt-4o", base_url=server.base_url)


def test_a_limit_given_twice_is_a_config_error(server):
    with pytest.raises(ConfigError, match="concurrency is given twice"):
        ChatEngine("openai", base_url=server.base_url, concurrency=4, llm_engine={"concurrency": 8})


def test_a_closed_engine_refuses_to_run(server):
    chat = engine(server)
    chat.run(["a"])
    chat.close()
    with pytest.raises(Exception, match="closed"):
        chat.run(["b"])


def test_progress_prints_the_rows_and_the_engine_state(server, capsys):
    with engine(server, progress=True) as chat:
        chat.run(["a", "b"])
    err = capsys.readouterr().err
    assert "rows 2/2" in err
    assert "requests 2 (+0 cached)" in err


def test_anthropic_receives_path_and_bytes_images_as_base64_blocks(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png((200, 0, 0)))
    blue = png((0, 0, 200))
    with FakeAnthropicServer() as fake:
        fake.queue(Reply.text("two squares"))  # type: ignore[call-arg]
        with ChatEngine("anthropic", base_url=fake.root_url, progress=False) as chat:
            [answer] = chat.run([{"prompt": "What is this?", "images": [path, blue]}])
        blocks = fake.completions()[0].body["messages"][0]["content"]
    assert answer.text == "two squares"
    images = [base64.b64decode(b["source"]["data"]) for b in blocks if b["type"] == "image"]
    assert [hashlib.sha256(i).hexdigest() for i in images] == [hashlib.sha256(path.read_bytes()).hexdigest(),
                                                              hashlib.sha256(blue).hexdigest()]


def test_a_pil_image_in_a_mode_png_cannot_hold_is_sent_as_rgb(server):
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    with engine(server) as chat:
        [answer] = chat.run([{"prompt": "colour?", "images": [cmyk]}])
    assert answer.ok, answer.error
    sent = Image.open(io.BytesIO(sent_images(server.completions()[0])[0]))
    assert (sent.format, sent.mode) == ("PNG", "RGB")


def test_image_bytes_over_the_limit_fail_their_row_unread(server):
    with engine(server, max_image_bytes=100) as chat:
        [answer] = chat.run([{"prompt": "x", "images": [png((1, 2, 3), (64, 64)) + b"\0" * 200]}])
    assert answer.error_type == "ImageError"
    assert "image_too_large" in (answer.error or "")


def test_a_cancelled_arun_cancels_its_rows_and_the_engine_goes_on(server):
    server.queue(Reply.hang())
    with engine(server, timeout_s=30) as chat:

        async def start_and_cancel() -> None:
            task = asyncio.ensure_future(chat.arun(["hangs"]))
            while not server.completions():
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(start_and_cancel())
        answers = chat.run(["after"])
    assert answers.texts() == ["echo: after"]


def test_an_engine_dropped_without_close_stops_its_thread(server):
    import gc

    chat = engine(server)
    chat.run(["a"])
    thread = chat._thread
    assert thread is not None and thread.is_alive()
    del chat
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_batch_mode_sends_the_rows_as_one_provider_batch(server, tmp_path):
    settings = {"mode": "batch", "batch_window_s": 0.05, "batch_poll_s": 0.05}
    with engine(server, cache=tmp_path / "cache", llm_engine=settings) as chat:
        answers = chat.run(["one", "two", "three"])
    assert answers.texts() == ["echo: one", "echo: two", "echo: three"]
    assert [r.path for r in server.requests if r.method == "POST"] == ["/v1/files", "/v1/batches"]
    assert server.completions() == []
    assert answers[0].usage.cost_usd == pytest.approx(answers[0].usage.prompt_tokens * 0.5 / 1e6
                                                      + answers[0].usage.completion_tokens * 1.0 / 1e6)


def test_batch_mode_without_a_cache_folder_is_a_config_error(server):
    with pytest.raises(ConfigError, match="batch mode"):
        engine(server, llm_engine={"mode": "batch"})


def test_a_chat_request_object_and_the_engines_system_prompt(server):
    from mmat_core import ChatRequest

    with engine(server, system="You are terse.") as chat:
        chat.run([ChatRequest(prompt="hi", max_tokens=7), {"prompt": "own", "system": "Mine."}])
    first, second = (r.body for r in server.completions())
    assert first["messages"][0] == {"role": "system", "content": "You are terse."}
    assert first["max_tokens"] == 7
    assert second["messages"][0] == {"role": "system", "content": "Mine."}


def test_the_live_display_renders_rows_and_engine_state():
    from mmat_core.chat.progress import ChatProgress

    stream = io.StringIO()
    progress = ChatProgress(3, lambda: {"requests": 2, "cached": 1, "tokens": 1234, "cost_usd": 0.5}, stream=stream,
                            live=True)
    for failed in (False, True, False):
        progress.update(failed=failed)
    progress.close()
    text = stream.getvalue()
    assert "3/3" in text and "1 failed" in text and "requests 2 (+1 cached)" in text and "$0.5000" in text


def test_a_cache_path_that_holds_something_else_is_a_config_error_at_once(server, tmp_path):
    taken = tmp_path / "notes.sqlite"
    taken.write_text("not a database")
    with pytest.raises(ConfigError, match="notes.sqlite"):
        engine(server, cache=taken)


def test_a_device_given_as_an_image_is_refused_unread(server):
    with engine(server) as chat:
        [answer] = chat.run([{"prompt": "x", "images": ["/dev/zero"]}])
    assert answer.error_type == "ImageError"
    assert "image_not_a_file" in (answer.error or "")
    assert server.completions() == []


def test_no_rows_give_an_empty_result_and_summary(server):
    with engine(server) as chat:
        answers = chat.run([])
    assert list(answers) == []
    assert (answers.summary.rows, answers.summary.requests) == (0, 0)


def test_an_error_raised_by_the_rows_iterable_reaches_the_caller(server):
    def rows() -> Iterator[str]:
        yield "first"
        raise ValueError("the data loader broke")

    with engine(server) as chat:
        with pytest.raises(ValueError, match="the data loader broke"):
            chat.run(rows())
        assert chat.run(["after"]).texts() == ["echo: after"]


def test_openai_style_messages_with_data_urls_are_taken_as_they_are(server):
    red = png((200, 0, 0))
    url = "data:image/png;base64," + base64.b64encode(red).decode()
    row = [{"role": "user", "content": [{"type": "text", "text": "Colour?"},
                                        {"type": "image_url", "image_url": {"url": url}}]}]
    with engine(server) as chat:
        [answer] = chat.run([row])
    assert answer.ok, answer.error
    assert sent_images(server.completions()[0]) == [red]


def test_an_http_image_url_fails_its_row_unfetched(server):
    with engine(server) as chat:
        [answer] = chat.run([{"prompt": "x", "images": ["https://example.com/cat.png"]}])
    assert answer.error_type == "RowError"
    assert "not fetched" in (answer.error or "")
    assert server.completions() == []


def test_a_system_prompt_given_twice_in_a_row_is_the_rows_error(server):
    row = {"system": "A.", "messages": [{"role": "system", "content": "B."}, {"role": "user", "content": "hi"}]}
    with engine(server) as chat:
        [answer] = chat.run([row])
    assert answer.error_type == "RowError"
    assert "twice" in (answer.error or "")


def test_the_engine_names_its_backend_limits_and_cache(server, tmp_path):
    with engine(server, concurrency=7, rpm=120, cache=tmp_path / "c") as chat:
        text = repr(chat)
    assert text == (f"ChatEngine(openai:gpt-4o, concurrency=7, rpm=120.0, tpm=None, mode=online, "
                    f"cache={tmp_path / 'c' / 'cache.sqlite'})")


def test_the_offline_backend_answers_a_chat_row_with_a_labelled_echo(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png((200, 0, 0)))
    with ChatEngine("offline", progress=False) as chat:
        answers = chat.run(["What is 2+2?", {"prompt": "What colour?", "images": [path]}])
    assert answers.texts() == ['[offline: no model was asked] You asked: "What is 2+2?".',
                               '[offline: no model was asked] You asked: "What colour?" and 1 image.']


def test_the_offline_backend_answers_a_response_format_with_json_that_fits_it():
    class Caption(BaseModel):
        caption: str
        objects: list[str]
        colour: Colour
        count: int
        note: str | None = None

    with ChatEngine("offline", progress=False, response_format=Caption) as chat:
        [answer] = chat.run(["Caption it."])
    assert answer.ok, answer.error
    assert answer.parsed == Caption(caption="offline", objects=[], colour=Colour(name="offline", hex="offline"), count=0)
