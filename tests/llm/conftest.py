"""Fixtures of the LLM tests: fake OpenAI and Anthropic servers on 127.0.0.1, test keys, a
responder that follows the MMAT step protocol, and a small real image."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmat_core.images import ImageStore
from mmat_core.models import ImageRef
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply

OPENAI_TEST_KEY = "sk-test-0penai-5ecret-value"
ANTHROPIC_TEST_KEY = "sk-ant-test-5ecret-value"

_ANSWER = re.compile(r"the correct answer: (.*)")


def protocol_reply(request: RecordedRequest) -> Reply:
    """Answer like a well-behaved generator: a final step when a schema is asked for, else the
    answer given in the system prompt (so answer_match keeps the sample)."""
    body = request.body or {}
    messages = body.get("messages") or []
    system = body.get("system") or next((m.get("content") for m in messages if m.get("role") == "system"), "") or ""
    match = _ANSWER.search(system if isinstance(system, str) else json.dumps(system))
    answer = match.group(1).strip() if match else "unknown"
    wants_step = "response_format" in body or "tools" in body
    if wants_step:
        step = {"thought": "Looking at the image, the evidence settles the question.", "operators": [],
                "rag": {"needed": False, "query": None}, "next_action": "final_answer"}
        return Reply.json(step)
    return Reply.text(answer)  # type: ignore[call-arg]


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI server answering the MMAT protocol by default."""
    with FakeOpenAIServer() as server:
        server.responder = protocol_reply
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    """A fake Anthropic server answering the MMAT protocol by default."""
    with FakeAnthropicServer() as server:
        server.responder = protocol_reply
        yield server


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test keys in the environment, as users provide them."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_TEST_KEY)


@pytest.fixture
def image(tmp_path: Path) -> tuple[ImageRef, ImageStore, bytes]:
    """A real 16x12 PNG on disk, its reference and an image store."""
    from PIL import Image

    from mmat_core.images import image_ref_from_file

    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 30)).save(buffer, format="PNG")
    path = tmp_path / "red.png"
    path.write_bytes(buffer.getvalue())
    return image_ref_from_file(path), ImageStore(tmp_path / "blobs"), buffer.getvalue()
