"""The engine's fast paths give exactly what the plain paths gave: canonical JSON through orjson,
step and argument checks through compiled schemas, a cache that commits in batches, curation
that trusts a resumed run's finished samples."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mmat_core import prompts
from mmat_core.config import CurationSettings
from mmat_core.curation import Curator
from mmat_core.components import ContentPart, LLMRequest, Message
from mmat_core.engine.cache import Cache, canonical, canonical_bytes, key_of, keyed, model_key_document, model_keyed
from mmat_core.engine.schemacheck import schema_errors
from mmat_core.models import ImageRef, SourceSample

TRICKY: list[Any] = [
    {"latency_s": 9e-05, "cost": 0.0, "neg": -0.0, "tiny": 5e-324, "big": 1e16, "huge": 1.7976931348623157e308},
    {"nan": float("nan"), "inf": float("inf"), "minus_inf": float("-inf")},
    {"ints": [2**63 - 1, -(2**63), 2**64 - 1, 2**70, -(2**80)]},
    {1: "int key", 2: None},
    {"b": {True: 1}},
    {"text": "é\u2028\x00\x1f\"\\ \U0001f600", "tuple": (1, (2.5, 1e-7)), "none": None},
    [[[[[]]]], {"z": 1, "a": 2, "é": 3}],
]


def reference(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("obj", TRICKY)
def test_canonical_json_is_what_the_standard_library_writes(obj: Any) -> None:
    assert canonical(obj) == reference(obj)
    assert canonical_bytes(obj) == reference(obj).encode()


def test_keyed_gives_the_key_of_and_the_canonical_text() -> None:
    document = {"kind": "model", "messages": [{"role": "user", "content": "hi"}], "params": {"temperature": 1e-5}}
    assert keyed(document) == (key_of(document), reference(document))


@pytest.mark.parametrize("temperature", [None, 0.0, 0.7, 1e-5, float("nan")])
def test_model_keyed_gives_the_key_and_text_of_the_plain_path(temperature: float | None) -> None:
    image = ImageRef(sha256="ab" * 32, width=640, height=480)
    request = LLMRequest(
        purpose="rationale_step", prompt_version="v1", temperature=temperature, max_tokens=512,
        response_schema={"type": "object", "minimum": 1e-7, "properties": {"x": {"type": "string"}}},
        messages=[Message(role="system", content="rules \u00e9\x00\"quoted\""),
                  Message(role="user", content=[ContentPart(type="image", image=image), ContentPart(type="text", text="What is it?")]),
                  Message(role="assistant", content="It is \U0001f600.")])
    assert model_keyed("offline", "m", request) == keyed(model_key_document("offline", "m", request))


def test_types_json_refuses_are_still_refused() -> None:
    from datetime import date

    with pytest.raises(TypeError):
        canonical({"when": date(2026, 1, 1)})


STEPS: list[Any] = [
    {"thought": "look", "operators": ["ocr"], "rag": {"needed": False, "query": None}, "next_action": "continue"},
    {"thought": "look", "operators": [{"name": "ocr", "args": {}}], "rag": {"needed": True, "query": "q"}, "next_action": "final_answer"},
    {"thought": "", "operators": [], "rag": {"needed": False, "query": None}, "next_action": "continue"},
    {"thought": "x", "operators": [1], "rag": {"needed": False, "query": None}, "next_action": "continue"},
    {"thought": "x", "operators": [{"name": "ocr", "extra": 1}], "rag": {"needed": False, "query": None}, "next_action": "continue"},
    {"thought": "x", "operators": [], "rag": {"needed": 1, "query": None}, "next_action": "continue"},
    {"thought": "x", "operators": [], "rag": {"needed": False}, "next_action": "continue"},
    {"thought": "x", "operators": [], "rag": {"needed": False, "query": None}, "next_action": "stop"},
    {"thought": "x", "operators": [], "rag": {"needed": False, "query": None}, "next_action": "continue", "more": 1},
    {"operators": [], "rag": {"needed": False, "query": None}, "next_action": "continue"},
    ["not", "an", "object"],
]


@pytest.mark.parametrize("step", STEPS)
def test_step_errors_are_exactly_jsonschemas(step: Any) -> None:
    expected = [e.message for e in jsonschema.Draft202012Validator(prompts.STEP_SCHEMA).iter_errors(step)]
    assert [e.message for e in schema_errors(prompts.STEP_SCHEMA, step)] == expected


def test_a_batching_cache_reads_its_own_uncommitted_writes_and_commits_them_on_flush(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = Cache(path, commit_after_s=60.0, commit_every=1000)  # only an explicit flush commits here

    async def put_then_get() -> Any:
        cache.put("k1", {"text": "answer"}, kind="model", document={"kind": "model"})
        return cache.get("k1")

    assert asyncio.run(put_then_get()) == {"text": "answer"}
    with sqlite3.connect(str(path)) as other:
        assert other.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0
    cache.flush()
    with sqlite3.connect(str(path)) as other:
        assert other.execute("SELECT key, hits FROM entries").fetchall() == [("k1", 1)]
    cache.close()


def test_a_batching_cache_finds_entries_another_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = Cache(path, commit_after_s=0.25)  # starts empty: misses are answered from memory
    writer = Cache(path)  # commits at once, like a second process sharing the file
    writer.put("foreign", {"text": "theirs"}, kind="model", document={})
    writer.close()
    cache.put("mine", {"text": "ours"}, kind="model", document={})
    cache.flush()  # sees the foreign commit and stops trusting its own key list
    assert cache.get("foreign") == {"text": "theirs"}
    cache.close()


def test_closing_a_batching_cache_commits_what_it_gathered(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = Cache(path, commit_after_s=60.0)
    asyncio.run(asyncio.sleep(0))
    cache.put("k", {"v": 1}, kind="tool", document={"kind": "tool"})
    cache.close()
    reopened = Cache(path)
    assert reopened.get("k") == {"v": 1}
    reopened.close()


def test_a_batching_cache_writes_in_its_own_thread_and_stops_it_on_close(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "cache.sqlite"
    cache = Cache(path, commit_after_s=60.0)
    assert cache._wdb.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # commits never sync the file
    assert "mmat-cache-writer" in {t.name for t in threading.enumerate()}
    cache.put("k", {"v": 1}, kind="model", document={"kind": "model"})
    cache.close()
    assert "mmat-cache-writer" not in {t.name for t in threading.enumerate()}
    assert not path.with_name("cache.sqlite-wal").exists()  # the last close checkpointed everything
    reopened = Cache(path)
    assert reopened.get("k") == {"v": 1}
    reopened.close()


def _rows(count: int) -> list[SourceSample]:
    rows = []
    for n in range(count):
        question = f"What is shown in picture {n % 7}?"  # repeats: later copies are duplicates
        rows.append(SourceSample(id=f"s/{n}", source="s", subset="a" if n % 2 else "b", question=question,
                                 answers=[str(n)], images=[ImageRef(sha256=f"{n % 7:064x}", width=640, height=480)]))
    return rows


def test_curation_that_trusts_finished_samples_yields_the_same_stream() -> None:
    settings = CurationSettings()
    plain = list(Curator(settings)(_rows(40)))
    kept = [row.id for row in plain if isinstance(row, SourceSample)]
    trusting = Curator(settings, trusted=set(kept[:5]))
    assert list(trusting(_rows(40))) == plain
    assert trusting.kept == len(kept)


def test_curation_with_the_stored_dedup_keys_yields_the_same_stream() -> None:
    settings = CurationSettings()
    recording = Curator(settings, record_keys=True)
    plain = list(recording(_rows(40)))
    kept = [row.id for row in plain if isinstance(row, SourceSample)]
    assert set(recording.keys) == set(kept)
    # A resume trusting the first five, with their keys as the store kept them: the same stream,
    # without hashing the trusted rows again.
    first = {row_id: recording.keys[row_id] for row_id in kept[:5]}
    resumed = Curator(settings, trusted=set(first), seen=first.values())
    resumed.dedup_key = None  # type: ignore[assignment,method-assign]  # trusted rows must not need it...
    stream = resumed(_rows(40))
    out = [next(stream) for _ in range(5)]  # ...for as long as only trusted rows come
    assert out == plain[:5]
    resumed2 = Curator(settings, trusted=set(first), seen=first.values())
    assert list(resumed2(_rows(40))) == plain
