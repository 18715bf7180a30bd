"""Each hook, exercised by an in-test plugin that registers a component and gets it used."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmat_core import Pipeline, hookimpl
from mmat_core.components import (
    Critic,
    CriticContext,
    Detection,
    Detector,
    Executor,
    LLMBackend,
    LLMRequest,
    LLMResponse,
    RecordFormatter,
    SearchBackend,
    Source,
    Trainer,
    TrainResult,
)
from mmat_core.models import Rejected, SearchHit, SourceSample, Trace, Verdict
from mmat_core.plugins import PluginManager, set_plugin_manager
from mmat_core.store import RunStore
from tests.core.conftest import EchoTool, make_png


def plugin(**hooks: Callable[..., None]) -> type:
    """A plugin class whose hook implementations are the given functions."""
    return type("InTestPlugin", (), {name: staticmethod(hookimpl(fn)) for name, fn in hooks.items()})


def with_plugin(**hooks: Callable[..., None]) -> PluginManager:
    pm = PluginManager()
    pm.register(plugin(**hooks), "in-test")
    return pm


def test_register_sources(tmp_path: Path) -> None:
    image = make_png(tmp_path / "a.png")

    class One(Source):
        name = "one"

        def iter_rows(self) -> Iterator[SourceSample | Rejected]:
            from mmat_core.images import image_ref_from_file

            yield SourceSample(id="one/1", source="one", question="q?", answers=["TOTAL"], images=[image_ref_from_file(image)])

    pm = with_plugin(register_sources=lambda register: register(One))
    rows = list(Pipeline(source="one", plugins=pm, search=False).iter_samples())
    assert [r.id for r in rows] == ["one/1"]


def test_register_llms() -> None:
    class Parrot(LLMBackend):
        name = "parrot"

        async def complete(self, request: LLMRequest, images: Any) -> LLMResponse:
            return LLMResponse(text=request.messages[-1].text(), model="parrot-1")

    pm = with_plugin(register_llms=lambda register: register(Parrot))
    backend = pm.create("llm", "parrot")
    reply = asyncio.run(backend.complete(LLMRequest(purpose="x", messages=[{"role": "user", "content": "hi"}]), None))
    assert reply.text == "hi" and backend.model == "parrot"


def test_register_tools() -> None:
    pm = with_plugin(register_tools=lambda register: register(EchoTool))
    assert pm.get("tool", "echo") is EchoTool and EchoTool.plugin == "in-test"


def test_register_search_backends() -> None:
    class Fixed(SearchBackend):
        name = "fixed"

        async def search(self, query: str, k: int) -> list[SearchHit]:
            return [SearchHit(title="t", snippet=f"about {query}")][:k]

    pm = with_plugin(register_search_backends=lambda register: register(Fixed))
    hits = asyncio.run(pm.create("search", "fixed").search("cats", 3))
    assert hits[0].snippet == "about cats"


def test_register_detectors(tmp_path: Path, tiny_source: Callable[[PluginManager], str]) -> None:
    class Corner(Detector):
        name = "corner"

        async def detect(self, image: bytes, size: tuple[int, int], labels: list[str], ctx: Any) -> list[Detection]:
            return [Detection(label=label, score=1.0, box=[0, 0, size[0] / 2, size[1] / 2]) for label in labels]

    pm = with_plugin(register_detectors=lambda register: register(Corner))
    source = tiny_source(pm)
    # label_bbox finds its detector through the process-wide manager (the one --plugins configures).
    set_plugin_manager(pm)
    try:
        result = Pipeline(source=source, tools=[{"name": "label_bbox", "detector": "corner"}], critics=[],
                          plugins=pm, search=False).run(tmp_path / "run")
    finally:
        set_plugin_manager(None)
    assert Corner.plugin == "in-test" and result.manifest.counts["kept"] == 2
    store = RunStore.open(tmp_path / "run")
    try:
        calls = [call for trace in store.traces() for step in trace.steps for call in step.tool_calls]
    finally:
        store.close()
    assert calls and all(call.name == "label_bbox" and call.error is None for call in calls)
    boxes = [box for call in calls for found in call.data["boxes"].values() for box in found]
    assert boxes and all(box == [0.0, 0.0, 0.5, 0.5] for box in boxes)


def test_register_critics(tmp_path: Path, tiny_source: Callable[[PluginManager], str]) -> None:
    class RejectAll(Critic):
        name = "reject_all"

        async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
            return Verdict(critic=self.name, verdict="reject", reason="testing")

    pm = with_plugin(register_critics=lambda register: register(RejectAll))
    source = tiny_source(pm)
    result = Pipeline(source=source, tools=[], critics=["reject_all"], plugins=pm, search=False).run(tmp_path / "run")
    assert result.manifest.counts["kept"] == 0
    assert result.manifest.counts["status_dropped"] == 2


def test_register_formatters(tmp_path: Path, tiny_source: Callable[[PluginManager], str]) -> None:
    class Answers(RecordFormatter):
        name = "answers"
        default_file = "answers.jsonl"

        def record(self, trace: Trace, ctx: Any) -> dict[str, Any]:
            return {"id": trace.id, "answer": trace.final_answer}

    pm = with_plugin(register_formatters=lambda register: register(Answers))
    source = tiny_source(pm)
    Pipeline(source=source, tools=[], critics=[], formatters=["answers"], plugins=pm, search=False).run(tmp_path / "run")
    assert (tmp_path / "run" / "answers.jsonl").read_text().count("\n") == 2


def test_register_trainers(tmp_path: Path) -> None:
    class Count(Trainer):
        name = "count"

        def train(self, *, data: Path, model: str, output_dir: Path, preset: str | None = None) -> TrainResult:
            return TrainResult(output_dir=str(output_dir), steps=len(data.read_text().splitlines()))

    pm = with_plugin(register_trainers=lambda register: register(Count))
    data = tmp_path / "rr.jsonl"
    data.write_text("{}\n{}\n")
    assert pm.create("trainer", "count").train(data=data, model="m", output_dir=tmp_path).steps == 2


def test_register_executors(tmp_path: Path, tiny_source: Callable[[PluginManager], str]) -> None:
    calls: list[Path] = []

    class Recording(Executor):
        name = "recording"

        def execute(self, pipeline: Any, out_dir: Path) -> Any:
            calls.append(out_dir)
            return pipeline.run_local(out_dir)

    pm = with_plugin(register_executors=lambda register: register(Recording))
    source = tiny_source(pm)
    Pipeline(source=source, tools=[], critics=[], executor="recording", plugins=pm, search=False).run(tmp_path / "run")
    assert calls == [tmp_path / "run"]
