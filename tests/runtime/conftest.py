"""Fixtures of the runtime tests: real photos, and the scripted OpenAI-compatible fake on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply

SAMPLE_IMAGES = Path(__file__).resolve().parents[2] / "plugins" / "sources" / "sample_data" / "images"


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """astronaut.png (one face) and chelsea.png (a cat, no face) from scikit-image, and a receipt with text."""
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("astronaut", "chelsea"):
        paths[name] = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(paths[name])
    paths["receipt"] = SAMPLE_IMAGES / "doc_receipt.png"
    return paths


def assistant_turns(request: RecordedRequest) -> int:
    """How many assistant messages the request carries: the turn the model is asked for."""
    return sum(1 for m in (request.body or {}).get("messages", []) if m.get("role") == "assistant")


def scripted(replies: list[str]) -> Callable[[RecordedRequest], Reply]:
    """A responder that answers turn N of each dialogue with ``replies[N]`` (the last one repeats)."""

    def respond(request: RecordedRequest) -> Reply:
        return Reply.text(replies[min(assistant_turns(request), len(replies) - 1)])  # type: ignore[call-arg]

    return respond


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A fresh fake server per test."""
    with FakeOpenAIServer() as fake:
        yield fake


def user_texts(request: RecordedRequest) -> list[str]:
    """The text of every user message of a recorded chat request."""
    texts = []
    for message in request.body["messages"]:
        if message["role"] != "user":
            continue
        content: Any = message["content"]
        texts.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content if p["type"] == "text"))
    return texts


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny local models run fastest on one thread on a shared machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
