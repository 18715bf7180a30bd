"""A flaky model server (10% 429s, 5% 500s, 2% hung connections, 1% malformed bodies): the
build completes with the same files as against a healthy server, no sample is lost or
duplicated, and no request that was answered is ever sent again. Real `openai` backend, real HTTP
server on 127.0.0.1 (tests/fakes/openai_server.py)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmat_core import Pipeline
from mmat_core.config import load_config
from mmat_core.plugins import PluginManager
from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply
from tests.scale import plugin as stubs
from tests.scale.conftest import read_jsonl

OUTPUTS = ("rr.jsonl", "orr.jsonl", "quarantine.jsonl")


class ProtocolModel:
    """Answers like a model that follows the MMAT step protocol, deterministically from the
    request, after injecting faults at the given rates (seeded)."""

    def __init__(self, faults: bool, seed: int = 7) -> None:
        self.faults = faults
        self.rng = random.Random(seed)
        self.answered: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()

    def __call__(self, request: RecordedRequest) -> Reply:
        if self.faults:
            roll = self.rng.random()
            for kind, limit, reply in (("429", 0.10, Reply.rate_limited(retry_after=0.01)),
                                       ("500", 0.15, Reply.server_error()), ("hang", 0.17, Reply.hang()),
                                       ("malformed", 0.18, Reply.malformed())):
                if roll < limit:
                    self.injected[kind] += 1
                    return reply
        messages = (request.body or {}).get("messages", [])
        self.answered[hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()] += 1
        first_user = next(m for m in messages if m["role"] == "user")
        text = first_user["content"] if isinstance(first_user["content"], str) else " ".join(
            p.get("text", "") for p in first_user["content"] if p.get("type") == "text")
        item = int(re.search(r"\(item (\d+)\)", text).group(1))  # type: ignore[union-attr]
        if request.user_text().startswith("Based on the above information"):
            return Reply.text(str(item % 97))  # type: ignore[call-arg]
        steps = sum(1 for m in messages if m["role"] == "assistant")
        step = {"thought": f"Step {steps + 1} on item {item}: reading the receipt.", "operators": ["ocr"] if steps == 0 else [],
                "rag": {"needed": False, "query": None}, "next_action": "continue" if steps == 0 else "final_answer"}
        return Reply.text(json.dumps(step))  # type: ignore[call-arg]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def build(server: FakeOpenAIServer, out: Path) -> Any:
    from PIL import Image

    image = out.parent / "receipt.png"
    Image.new("RGB", (32, 24), "white").save(image)
    manager = PluginManager(block=["tools"])
    manager.register(stubs, "scale-stubs")
    config = load_config(None, {
        "source": {"name": "generated", "count": 40, "reject_every": 11, "image": str(image)},
        "llm": {"name": "openai", "model": "fake-vlm", "base_url": server.base_url, "api_key_env": None},
        "llm_engine": {"timeout_s": 0.5, "max_attempts": 8, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
                       "progress": False},
        "tools": ["ocr"], "critics": ["answer_match"], "search": None,
        # The final answers come from the flaky server too (the label would need no request).
        "engine": {"final_answer": "model"},
    })
    return Pipeline.from_config(config, plugins=manager).run(out)


def test_a_flaky_server_gives_the_same_files_as_a_healthy_one(server: FakeOpenAIServer, tmp_path: Path) -> None:
    healthy = ProtocolModel(faults=False)
    server.responder = healthy
    build(server, tmp_path / "healthy")

    flaky = ProtocolModel(faults=True)
    server.responder = flaky
    result = build(server, tmp_path / "flaky")

    assert set(flaky.injected) == {"429", "500", "hang", "malformed"}
    for name in OUTPUTS:
        assert (tmp_path / "flaky" / name).read_bytes() == (tmp_path / "healthy" / name).read_bytes(), name
    ids = [r["id"] for r in read_jsonl(tmp_path / "flaky" / "rr.jsonl")]
    assert len(ids) == len(set(ids)) == result.manifest.counts["finished"] > 0
    assert max(flaky.answered.values()) == 1  # no answered request was sent again
    assert set(flaky.answered) == set(healthy.answered)
