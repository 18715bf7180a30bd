"""The openai and anthropic backends over real HTTP against the fake servers."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from mmat_core.components import ContentPart, LLMRequest, Message
from mmat_core.engine.errors import MalformedResponse, Overloaded, PermanentError, RateLimited
from mmat_core.errors import ConfigError
from mmat_core.images import ImageStore
from mmat_plugins.llms.anthropic_backend import AnthropicBackend
from mmat_plugins.llms.openai_backend import OpenAIBackend
from tests.fakes.openai_server import Reply
from tests.llm.conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


def ask(text: str = "hello", schema: dict | None = None) -> LLMRequest:
    return LLMRequest(purpose="caption", messages=[Message(role="system", content="be brief"),
                                                   Message(role="user", content=text)], response_schema=schema)


def run(backend, request, images=None):
    async def go():
        try:
            return await backend.complete(request, images or ImageStore())
        finally:
            await backend.aclose()
    return asyncio.run(go())


@pytest.mark.parametrize("transport", ["aiohttp", "sdk", "sdk-httpx"])
def test_openai_answers_with_text_and_usage_on_every_transport(openai_server, transport):
    openai_server.queue(Reply.text("a red square", prompt_tokens=11, completion_tokens=3))
    response = run(OpenAIBackend(base_url=openai_server.base_url, model="gpt-4o", transport=transport), ask())
    assert response.text == "a red square"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (11, 3)
    assert openai_server.completions()[0].headers["authorization"] == f"Bearer {OPENAI_TEST_KEY}"


def test_openai_sends_images_as_base64_data_urls(openai_server, image):
    ref, store, data = image
    request = LLMRequest(purpose="caption", messages=[Message(role="user", content=[
        ContentPart(type="image", image=ref), ContentPart(type="text", text="what colour?")])])
    run(OpenAIBackend(base_url=openai_server.base_url), request, store)
    parts = openai_server.completions()[0].body["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}
    assert parts[1] == {"type": "text", "text": "what colour?"}


def test_openai_requests_json_schema_response_format(openai_server):
    openai_server.queue(Reply.json({"label": "cat"}))
    response = run(OpenAIBackend(base_url=openai_server.base_url), ask(schema=SCHEMA))
    sent = openai_server.completions()[0].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == SCHEMA
    assert json.loads(response.text) == {"label": "cat"}


def test_openai_without_structured_output_sends_no_response_format(openai_server):
    openai_server.queue(Reply.json({"label": "cat"}))
    run(OpenAIBackend(base_url=openai_server.base_url, structured_output="none"), ask(schema=SCHEMA))
    assert "response_format" not in openai_server.completions()[0].body


def test_a_reply_that_misses_its_schema_is_re_asked_once_with_the_problem(openai_server):
    openai_server.queue(Reply.text("no json here"), Reply.json({"label": "dog"}))
    response = run(OpenAIBackend(base_url=openai_server.base_url, structured_output="none"), ask(schema=SCHEMA))
    assert json.loads(response.text) == {"label": "dog"}
    repair = openai_server.completions()[1].body["messages"][-1]["content"]
    assert "did not match the required JSON schema" in repair


def test_schema_repair_is_bounded(openai_server):
    openai_server.queue(Reply.text("bad 1"), Reply.text("bad 2"), Reply.text("bad 3"))
    response = run(OpenAIBackend(base_url=openai_server.base_url, schema_repair_attempts=1), ask(schema=SCHEMA))
    assert response.text == "bad 2"
    assert len(openai_server.completions()) == 2


@pytest.mark.parametrize(("reply", "error"), [
    (Reply.rate_limited(retry_after=7), RateLimited),
    (Reply.server_error(), Overloaded),
    (Reply.overloaded(), Overloaded),
    (Reply.malformed(), MalformedResponse),
    (Reply.truncated(), MalformedResponse),
    (Reply.status(400, "bad request"), PermanentError),
], ids=["429", "500", "529", "malformed", "truncated", "400"])
def test_openai_maps_faults_to_engine_errors(openai_server, reply, error):
    openai_server.queue(reply)
    with pytest.raises(error) as caught:
        run(OpenAIBackend(base_url=openai_server.base_url), ask())
    assert caught.value.retryable is (error is not PermanentError)


def test_openai_rate_limit_carries_retry_after(openai_server):
    openai_server.queue(Reply.rate_limited(retry_after=7))
    with pytest.raises(RateLimited) as caught:
        run(OpenAIBackend(base_url=openai_server.base_url), ask())
    assert caught.value.retry_after == pytest.approx(7)


def test_missing_api_key_names_the_variable_to_set(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="set the environment variable OPENAI_API_KEY"):
        OpenAIBackend()


def test_api_key_variable_can_be_renamed_or_omitted(monkeypatch, openai_server):
    monkeypatch.setenv("MY_VLLM_KEY", "k-123456")
    assert OpenAIBackend(api_key_env="MY_VLLM_KEY")._api_key == "k-123456"
    run(OpenAIBackend(base_url=openai_server.base_url, api_key_env=None), ask())
    assert "authorization" not in openai_server.completions()[0].headers


def test_api_key_never_appears_in_options_or_errors(openai_server):
    backend = OpenAIBackend(base_url=openai_server.base_url)
    assert OPENAI_TEST_KEY not in backend.options.model_dump_json()
    openai_server.queue(Reply.status(401, f"Incorrect API key provided: {OPENAI_TEST_KEY}"))
    with pytest.raises(PermanentError) as caught:
        run(backend, ask())
    assert OPENAI_TEST_KEY not in str(caught.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_anthropic_answers_with_text_and_usage(anthropic_server, transport):
    anthropic_server.queue(Reply.text("hi there", prompt_tokens=9, completion_tokens=2))
    response = run(AnthropicBackend(base_url=anthropic_server.root_url, transport=transport), ask())
    assert response.text == "hi there"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (9, 2)
    sent = anthropic_server.completions()[0]
    # anthropic 2.x sends the key as a bearer token; older clients used x-api-key.
    assert ANTHROPIC_TEST_KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert sent.body["system"] == "be brief"
    assert [m["role"] for m in sent.body["messages"]] == ["user"]


def test_anthropic_sends_images_as_base64_blocks(anthropic_server, image):
    ref, store, data = image
    request = LLMRequest(purpose="caption", messages=[Message(role="user", content=[
        ContentPart(type="image", image=ref), ContentPart(type="text", text="what colour?")])])
    run(AnthropicBackend(base_url=anthropic_server.root_url), request, store)
    block = anthropic_server.completions()[0].body["messages"][0]["content"][0]
    assert block == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": base64.b64encode(data).decode()}}


def test_anthropic_structured_output_uses_a_forced_tool(anthropic_server):
    anthropic_server.queue(Reply.json({"label": "cat"}))
    response = run(AnthropicBackend(base_url=anthropic_server.root_url), ask(schema=SCHEMA))
    body = anthropic_server.completions()[0].body
    assert body["tools"][0]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "reply"}
    assert json.loads(response.text) == {"label": "cat"}


@pytest.mark.parametrize(("reply", "error"), [
    (Reply.rate_limited(retry_after=3), RateLimited),
    (Reply.overloaded(), Overloaded),
    (Reply.server_error(), Overloaded),
    (Reply.malformed(), MalformedResponse),
    (Reply.truncated(), MalformedResponse),
], ids=["429", "529", "500", "malformed", "truncated"])
def test_anthropic_maps_faults_to_engine_errors(anthropic_server, reply, error):
    anthropic_server.queue(reply)
    with pytest.raises(error):
        run(AnthropicBackend(base_url=anthropic_server.root_url), ask())


def test_anthropic_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicBackend()


def test_missing_image_bytes_are_a_permanent_error_not_a_crash(openai_server, tmp_path):
    from mmat_core.models import ImageRef

    gone = ImageRef(sha256="0" * 64, path=str(tmp_path / "gone.png"))
    request = LLMRequest(purpose="caption", messages=[Message(role="user", content=[ContentPart(type="image", image=gone)])])
    with pytest.raises(PermanentError, match="cannot load image"):
        run(OpenAIBackend(base_url=openai_server.base_url), request)
    assert openai_server.completions() == []
