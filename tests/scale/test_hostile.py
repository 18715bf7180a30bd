"""The hostile input corpus: broken images, bombs, bad text, paths escaping the dataset root,
URLs to internal addresses, hostile model replies and tool arguments. Each bad row gets a clear
quarantine (or failure) reason, the run completes, and the good rows come out unaffected."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mmat_plugins.llms.offline import OfflineBackend

from mmat_core import Pipeline, hookimpl
from mmat_core.components import LLMRequest, LLMResponse
from mmat_core.config import load_config
from mmat_core.images import ImageStore
from mmat_core.plugins import PluginManager
from tests.scale.conftest import read_jsonl


def png(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Path:
    from PIL import Image

    Image.new(mode, size, "white" if mode == "RGB" else 1).save(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder with one good row per image kind and every kind of hostile row."""
    tmp_path = tmp_path_factory.mktemp("corpus")
    root = tmp_path / "data"
    root.mkdir()
    good = png(root / "good.png")
    data = good.read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "corrupt.png").write_bytes(os.urandom(512))
    (root / "empty.png").write_bytes(b"")
    png(root / "bomb.png", (20_000, 20_000), mode="1")  # 400 megapixels in a few kilobytes
    outside = png(tmp_path / "outside.png")
    (root / "link.png").symlink_to(outside)
    rows: list[dict[str, Any] | bytes] = [
        {"id": "good", "question": "What is shown?", "answer": "nothing", "image": "good.png"},
        {"id": "truncated", "question": "What is shown?", "answer": "a", "image": "truncated.png"},
        {"id": "corrupt", "question": "What is shown?", "answer": "a", "image": "corrupt.png"},
        {"id": "empty", "question": "What is shown?", "answer": "a", "image": "empty.png"},
        {"id": "bomb", "question": "What is shown?", "answer": "a", "image": "bomb.png"},
        {"id": "traversal", "question": "What is shown?", "answer": "a", "image": "../../../../etc/passwd"},
        {"id": "absolute", "question": "What is shown?", "answer": "a", "image": "/etc/hostname"},
        {"id": "symlink", "question": "What is shown?", "answer": "a", "image": "link.png"},
        {"id": "loopback-url", "question": "What is shown?", "answer": "a", "image": "http://127.0.0.1:9/x.png"},
        {"id": "metadata-url", "question": "What is shown?", "answer": "a", "image": "http://169.254.169.254/latest"},
        {"id": "file-url", "question": "What is shown?", "answer": "a", "image": "file:///etc/passwd"},
        b'{"id": "latin1", "question": "Qu\xe9 es?", "answer": "a", "image": "good.png"}',
        {"id": "control", "question": "What\x00 is\x1b[31m shown?\x07", "answer": "a", "image": "good.png"},
        b'{"id": "cut", "question": "What',
        {"id": "huge-reply", "question": "HUGE reply please", "answer": "b", "image": "good.png"},
        {"id": "empty-reply", "question": "EMPTY reply please", "answer": "b", "image": "good.png"},
        {"id": "invalid-reply", "question": "BADJSON reply please", "answer": "b", "image": "good.png"},
        {"id": "escaping-args", "question": "ESCAPE the schema", "answer": "b", "image": "good.png"},
        {"id": "good-2", "question": "What else is shown?", "answer": "more", "image": "good.png"},
    ]
    with (root / "rows.jsonl").open("wb") as fh:
        for row in rows:
            fh.write((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n")
    return root


ROW_NUMBERS = {name: n for n, name in enumerate(
    ["good", "truncated", "corrupt", "empty", "bomb", "traversal", "absolute", "symlink", "loopback-url", "metadata-url",
     "file-url", "latin1", "control", "cut"], 1)}


class HostileBackend(OfflineBackend):
    """The offline backend, except for questions asking for a hostile reply."""

    name = "hostile"

    async def complete(self, request: LLMRequest, images: ImageStore) -> LLMResponse:
        question = str(request.context.get("question", ""))
        if request.purpose == "rationale_step":
            if question.startswith("HUGE"):
                return LLMResponse(text="{" + "x" * 5_000_000, model=self.model)
            if question.startswith("EMPTY"):
                return LLMResponse(text="", model=self.model)
            if question.startswith("BADJSON"):
                return LLMResponse(text='{"thought": "unterminated', model=self.model)
            if question.startswith("ESCAPE") and request.context.get("turn") == 0:
                step = {"thought": "Let me read the file.", "next_action": "continue",
                        "operators": [{"name": "ocr", "args": {"path": "/etc/passwd", "cmd": "$(rm -rf /)"}}],
                        "rag": {"needed": False, "query": None}}
                return LLMResponse(text=json.dumps(step), model=self.model)
        return await super().complete(request, images)


@pytest.fixture(scope="module")
def hostile_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One build over the corpus (real OCR, the hostile backend), shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    class Plugin:
        @staticmethod
        @hookimpl
        def register_llms(register: Any) -> None:
            register(HostileBackend)

    manager = PluginManager()
    manager.register(Plugin, "hostile-backend")
    config = load_config(None, {"source": {"name": "jsonl", "path": str(corpus / "rows.jsonl")},
                                "llm": "hostile", "tools": ["ocr"], "critics": ["answer_match"], "search": None})
    out = tmp_path / "run"
    result = Pipeline.from_config(config, plugins=manager).run(out)
    return out, result


def reasons(out: Path) -> dict[str, str]:
    """Row or sample -> quarantine reason (source rejects) or failure (samples that failed)."""
    found = {}
    for row in read_jsonl(out / "quarantine.jsonl"):
        found[row["row"]] = row["reason"]
    return found


def test_the_run_completes_and_good_rows_come_out(hostile_run: tuple[Path, Any]) -> None:
    out, result = hostile_run
    assert result.manifest.complete
    ids = {record["id"].split("/")[1] for record in read_jsonl(out / "rr.jsonl")}
    assert {"good", "good-2"} <= ids
    assert not ids & {"truncated", "corrupt", "empty", "bomb", "traversal", "absolute", "symlink", "huge-reply",
                      "empty-reply", "invalid-reply"}


@pytest.mark.parametrize("row, reason", [
    ("truncated", "image_corrupt"), ("corrupt", "image_corrupt"), ("empty", "image_empty"), ("bomb", "image_too_large"),
    ("traversal", "path_escapes_root"), ("absolute", "path_escapes_root"), ("symlink", "path_escapes_root"),
])
def test_bad_images_and_escaping_paths_are_quarantined_with_their_reason(hostile_run: tuple[Path, Any], row: str,
                                                                         reason: str) -> None:
    out, _ = hostile_run
    assert reasons(out)[f"rows.jsonl:{ROW_NUMBERS[row]}"] == reason


@pytest.mark.parametrize("row", ["loopback-url", "metadata-url", "file-url"])
def test_image_urls_to_internal_addresses_or_other_schemes_are_quarantined_unfetched(hostile_run: tuple[Path, Any],
                                                                                     row: str) -> None:
    out, _ = hostile_run
    # The jsonl source reads local files only: a URL is never fetched, the row is quarantined.
    assert reasons(out)[f"rows.jsonl:{ROW_NUMBERS[row]}"] in ("image_missing", "url_address_refused", "url_scheme_refused")


def test_non_utf8_and_control_characters_are_quarantined_with_their_reason(hostile_run: tuple[Path, Any]) -> None:
    out, _ = hostile_run
    found = reasons(out)
    assert found[f"rows.jsonl:{ROW_NUMBERS['latin1']}"] == "invalid_utf8"
    assert "control_characters" in [r["reason"] for r in read_jsonl(out / "quarantine.jsonl")]


def test_a_cut_off_line_is_quarantined_as_invalid_json(hostile_run: tuple[Path, Any]) -> None:
    out, _ = hostile_run
    assert reasons(out)[f"rows.jsonl:{ROW_NUMBERS['cut']}"] == "invalid_json"


def test_hostile_model_replies_fail_their_sample_with_a_reason(hostile_run: tuple[Path, Any]) -> None:
    out, _ = hostile_run
    from mmat_core.store import RunStore

    store = RunStore.open(out)
    failures = {t.id.split("/")[1]: t.failure for t in store.traces() if t.status == "failed"}
    store.close()
    for row in ("huge-reply", "empty-reply", "invalid-reply"):
        assert failures.get(row) == "malformed_step", failures


def test_tool_arguments_outside_the_schema_become_an_error_observation(hostile_run: tuple[Path, Any]) -> None:
    out, _ = hostile_run
    from mmat_core.store import RunStore

    store = RunStore.open(out)
    trace = next(t for t in store.traces() if t.id.split("/")[1] == "escaping-args")
    store.close()
    call = trace.steps[0].tool_calls[0]
    assert call.error and "invalid arguments" in call.error
    assert "root:" not in call.result  # nothing of /etc/passwd was read
