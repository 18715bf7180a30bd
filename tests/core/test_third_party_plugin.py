"""A third-party plugin of every family, written against ``mmat_core``'s public names only.

The plugin is a module written to a temporary folder, as a third party would ship it: it may
import anything but mmat's internals, and a check of its source (ast) holds it to that. It is
registered without mmat's built-ins and builds a tiny dataset on its own: its source, its model
backend (which follows the step protocol), its operator, its search backend, its critic, its
formatter and its executor; its trainer then reads what the build wrote, and its detector serves
the built-in ``label_bbox`` operator.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import mmat_core
from mmat_core import PluginManager
from mmat_core.plugins import set_plugin_manager
from tests.core.conftest import make_png

PLUGIN_SOURCE = '''
"""acme-mmat: one component of every mmat family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from mmat_core import (
    BadLine,
    ComponentOptions,
    Critic,
    CriticContext,
    Detection,
    Detector,
    Executor,
    FormatContext,
    ImageResolver,
    ImageStore,
    LLMBackend,
    LLMRequest,
    LLMResponse,
    PermanentError,
    RecordFunction,
    RecordItem,
    RecordSource,
    RowError,
    SearchBackend,
    SearchHit,
    SourceOptions,
    SourceRecord,
    SourceSample,
    Tool,
    ToolContext,
    ToolOutput,
    Trace,
    Trainer,
    TrainResult,
    Usage,
    Verdict,
    ViewFormatter,
    hookimpl,
    iter_jsonl,
    text_field,
)


class AcmeSourceOptions(SourceOptions):
    root: str = Field(description="folder holding questions.jsonl and the images")


class AcmeSource(RecordSource):
    name = "acme_source"
    description = "questions.jsonl beside its images"
    licence = "CC0-1.0"
    Options = AcmeSourceOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.images = ImageResolver(Path(self.options.root))

    def iter_records(self) -> Any:
        for number, record in iter_jsonl(Path(self.options.root) / "questions.jsonl"):
            if isinstance(record, BadLine):  # quarantined with the reader's reason, the run goes on
                record = RowError(record.reason, record.detail)
            yield f"questions.jsonl:{number}", None, record

    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample]:
        image = self.images.from_path(text_field(record, "image"))
        return [self.sample(subset=None, row=str(record["id"]), turn=0, question=text_field(record, "question"),
                            answers=record["answer"], images=[image], task_type="vqa")]


class AcmeLLMOptions(ComponentOptions):
    model: str = Field("acme-1", description="the model name provenance records")


class AcmeLLM(LLMBackend):
    name = "acme_llm"
    description = "follows the step protocol: one operator and a search, then the answer"
    Options = AcmeLLMOptions

    async def complete(self, request: LLMRequest, images: ImageStore) -> LLMResponse:
        if request.purpose != "rationale_step":
            raise PermanentError(f"acme_llm answers rationale steps only, not {request.purpose}")
        turn = sum(1 for message in request.messages if message.role == "assistant")
        if turn == 0:
            step = {"thought": "I will measure the image and look the subject up.", "operators": ["acme_tool"],
                    "rag": {"needed": True, "query": "acme widgets"}, "next_action": "continue"}
        else:
            step = {"thought": "The measurement and the search agree, so the reasoning is complete.",
                    "operators": [], "rag": {"needed": False, "query": None}, "next_action": "final_answer"}
        text = json.dumps(step)
        return LLMResponse(text=text, model=self.model, usage=Usage(prompt_tokens=10, completion_tokens=len(text) // 4))


class AcmeTool(Tool):
    name = "acme_tool"
    label = "acme measurement"
    description = "count the bytes of the image"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        assert ctx.image is not None
        size = len(ctx.images.load(ctx.image))
        return ToolOutput(text=f"The image file holds {size} bytes.", data={"bytes": size})


class AcmeSearch(SearchBackend):
    name = "acme_search"
    description = "a one-document corpus"

    async def search(self, query: str, k: int) -> list[SearchHit]:
        return [SearchHit(title="Acme", snippet=f"Acme widgets are blue ({query}).", score=1.0)][:k]


class AcmeDetector(Detector):
    name = "acme_detector"
    description = "finds every object in the image's top-left quarter"

    async def detect(self, image: bytes, size: tuple[int, int], labels: list[str], ctx: ToolContext) -> list[Detection]:
        return [Detection(label=label, score=0.9, box=[0, 0, size[0] / 2, size[1] / 2]) for label in labels]


class AcmeCritic(Critic):
    name = "acme_critic"
    description = "keeps traces that measured the image"

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        measured = any(call.name == "acme_tool" for step in trace.steps for call in step.tool_calls)
        return Verdict(critic=self.name, verdict="pass" if measured else "reject",
                       reason="" if measured else "the image was never measured")


class AcmeFormatter(ViewFormatter):
    name = "acme_formatter"
    description = "id, answer and the operators called"
    default_file = "acme.jsonl"

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        def record(data: Any) -> dict[str, Any]:
            called = [call["name"] for step in data["steps"] for call in step.get("tool_calls") or ()]
            return {"id": data["id"], "answer": data["sample"]["answers"][0], "operators": called}
        return record


class AcmeTrainer(Trainer):
    name = "acme_trainer"
    description = "counts the examples it would train on"

    def train(self, *, data: Any, model: str, output_dir: Path, preset: str | None = None,
              overrides: dict[str, Any] | None = None, resume: Any = False, log: Any = None) -> TrainResult:
        paths = [data] if isinstance(data, Path) else list(data)
        examples = sum(1 for path in paths for _number, row in iter_jsonl(path, on_error="raise") if row)
        output_dir.mkdir(parents=True, exist_ok=True)
        return TrainResult(output_dir=str(output_dir), steps=examples)


class AcmeExecutor(Executor):
    name = "acme_executor"
    description = "runs in this process and leaves a mark"

    def execute(self, pipeline: Any, out_dir: Path) -> Any:
        result = pipeline.run_local(out_dir)
        (out_dir / "executed-by-acme").write_text("yes", encoding="utf-8")
        return result


@hookimpl
def register_sources(register):
    register(AcmeSource)


@hookimpl
def register_llms(register):
    register(AcmeLLM)


@hookimpl
def register_tools(register):
    register(AcmeTool)


@hookimpl
def register_search_backends(register):
    register(AcmeSearch)


@hookimpl
def register_detectors(register):
    register(AcmeDetector)


@hookimpl
def register_critics(register):
    register(AcmeCritic)


@hookimpl
def register_formatters(register):
    register(AcmeFormatter)


@hookimpl
def register_trainers(register):
    register(AcmeTrainer)


@hookimpl
def register_executors(register):
    register(AcmeExecutor)
'''


def mmat_imports(source: str) -> list[tuple[str, list[str]]]:
    """Every import of an mmat module in ``source``: (module, names)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0].startswith("mmat")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0].startswith("mmat"):
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The plugin, written to a file and imported from there like an installed module."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "acme_mmat.py").write_text(textwrap.dedent(PLUGIN_SOURCE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    yield importlib.import_module("acme_mmat")
    sys.modules.pop("acme_mmat", None)


def test_the_plugin_imports_only_public_names_of_mmat_core() -> None:
    imports = mmat_imports(PLUGIN_SOURCE)
    assert imports and all(module == "mmat_core" for module, _ in imports)
    assert {name for _, names in imports for name in names} <= set(mmat_core.__all__)


def test_the_plugin_implements_every_collection_hook() -> None:
    from mmat_core.hookspecs import COLLECTION_HOOKS

    defined = {node.name for node in ast.parse(PLUGIN_SOURCE).body if isinstance(node, ast.FunctionDef)}
    assert set(COLLECTION_HOOKS) <= defined


def test_a_third_party_plugin_of_every_family_builds_on_its_own(acme: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_png(data / "widget.png", text="WIDGET")
    rows = [{"id": i, "question": f"What colour is widget {i}?", "answer": "blue", "image": "widget.png"}
            for i in (1, 2)]
    lines = [json.dumps(row) + "\n" for row in rows] + ["{not json\n"]
    (data / "questions.jsonl").write_text("".join(lines), encoding="utf-8")
    pm = PluginManager(entry_points=False)  # none of mmat's built-ins: the plugin stands alone
    pm.register(acme, "acme")

    result = mmat_core.Pipeline(source={"name": "acme_source", "root": str(data)}, llm="acme_llm",
                                tools=["acme_tool"], search="acme_search", critics=["acme_critic"],
                                formatters=["acme_formatter"], executor="acme_executor",
                                plugins=pm).run(tmp_path / "run")

    assert (result.out_dir / "executed-by-acme").read_text() == "yes"
    (bad,) = [json.loads(line) for line in (result.out_dir / "quarantine.jsonl").read_text().splitlines()]
    assert (bad["row"], bad["reason"]) == ("questions.jsonl:3", "invalid_json")
    records = [json.loads(line) for line in (result.out_dir / "acme.jsonl").read_text().splitlines()]
    assert [(r["id"], r["answer"], r["operators"]) for r in records] == [
        ("acme_source/1/0", "blue", ["acme_tool"]), ("acme_source/2/0", "blue", ["acme_tool"])]
    trainer = pm.create("trainer", "acme_trainer")
    trained = trainer.train(data=result.out_dir / "acme.jsonl", model="tiny", output_dir=tmp_path / "model")
    assert trained.steps == 2
    assert {info.name: info.components for info in pm.info()}["acme"] == {
        "source": ["acme_source"], "llm": ["acme_llm"], "tool": ["acme_tool"], "search": ["acme_search"],
        "detector": ["acme_detector"], "critic": ["acme_critic"], "formatter": ["acme_formatter"], "trainer": ["acme_trainer"],
        "executor": ["acme_executor"]}


def test_the_build_records_the_plugin_s_search_and_operator_in_each_trace(acme: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_png(data / "widget.png", text="WIDGET")
    (data / "questions.jsonl").write_text(json.dumps({"id": 7, "question": "What colour is it?", "answer": "blue",
                                                     "image": "widget.png"}) + "\n", encoding="utf-8")
    pm = PluginManager(entry_points=False)
    pm.register(acme, "acme")
    pipeline = mmat_core.Pipeline(source={"name": "acme_source", "root": str(data)}, llm="acme_llm",
                                  tools=["acme_tool"], search="acme_search", critics=["acme_critic"],
                                  formatters=["acme_formatter"], executor="acme_executor", plugins=pm)
    pipeline.run(tmp_path / "run")
    from mmat_core.store import RunStore

    store = RunStore.open(tmp_path / "run")
    try:
        (trace,) = list(store.traces())
    finally:
        store.close()
    first = trace.steps[0]
    assert first.tool_calls[0].result.startswith("The image file holds ")
    assert first.rag is not None and first.rag.backend == "acme_search"
    assert "Acme widgets are blue" in first.rag.result
    assert [v.verdict for v in trace.verdicts] == ["pass"] and trace.kept
    assert trace.provenance.generator == "acme_llm:acme-1" and trace.provenance.licence == "CC0-1.0"


def test_the_plugin_s_detector_serves_the_built_in_label_bbox(acme: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_png(data / "widget.png", text="WIDGET")
    (data / "questions.jsonl").write_text(json.dumps({"id": 1, "question": "Where is the widget?", "answer": "top left",
                                                     "image": "widget.png"}) + "\n", encoding="utf-8")
    pm = PluginManager()  # mmat's built-ins (label_bbox, the offline backend) beside the plugin
    pm.register(acme, "acme")
    set_plugin_manager(pm)  # label_bbox looks its detector up in the process-wide manager
    try:
        result = mmat_core.Pipeline(source={"name": "acme_source", "root": str(data)}, llm="offline",
                                    tools=[{"name": "label_bbox", "detector": "acme_detector"}], critics=[],
                                    formatters=["acme_formatter"], search=False, plugins=pm).run(tmp_path / "run")
    finally:
        set_plugin_manager(None)
    (record,) = [json.loads(line) for line in (result.out_dir / "acme.jsonl").read_text().splitlines()]
    assert record["operators"] == ["label_bbox"]
    from mmat_core.store import RunStore

    store = RunStore.open(result.out_dir)
    try:
        (trace,) = list(store.traces())
    finally:
        store.close()
    (call,) = [call for step in trace.steps for call in step.tool_calls]
    assert call.error is None and call.data["boxes"]["widget"] == [[0.0, 0.0, 0.5, 0.5]]
