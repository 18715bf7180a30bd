"""The rationale loop against a scripted fake VLM on 127.0.0.1, asserting the exact dialogue.

Most tests run ``final_answer: model`` (the generator is asked for the answer, so the fake's
final request shows the whole dialogue); the label-mode tests say so in their names.

The generator is the fake VLM (tests/fakes/vlm_server.py) reached through the project's
``openai`` backend over real HTTP; OCR, face detection, image_caption, label_bbox (with a fake
detection server) and the local RAG backend run for real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from mmat_plugins.search.local import LocalCorpusSearch
from mmat_plugins.tools.caption import ImageCaptionTool
from mmat_plugins.tools.faces import FaceDetectionTool
from mmat_plugins.tools.label_bbox import LabelBoxTool
from mmat_plugins.tools.ocr import OCRTool

from mmat_core import prompts
from mmat_core.components import Tool, ToolContext, ToolOutput
from mmat_core.engine.client import EngineClient
from mmat_core.engine.rationale import LoopSettings, RationaleLoop, TextLimits
from mmat_core.engine.scheduler import Scheduler, SchedulerSettings
from mmat_core.engine.tools import ToolRunner
from mmat_core.images import ImageStore, image_ref_from_file
from mmat_core.models import Provenance, SourceSample, Trace
from tests.fakes.search_servers import FakeSearchServers
from tests.fakes.vlm_server import FakeVLM, Fault, step, vlm_backend
from tests.tools.conftest import render_text, save_photo

QUESTION = "What is the total on the receipt?"
CONSTRAINT = "\nAnswer the question using a single word or phrase."
FIRST = f"{QUESTION}{CONSTRAINT} Please start your reasoning."
FINAL = f"Based on the above information, please summarize and give the answer to the initial question: {QUESTION}"
CORPUS = [{"title": "Greenleaf Cafe", "text": "The Greenleaf Cafe is a coffee shop on Harbour Road.", "url": None}]


class ImageStatsTool(Tool):
    """A third-party operator defined outside mmat: it must show up in the prompts unchanged."""

    name = "image_stats"
    version = "1"
    description = "measure the image's width and height"
    args_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "additionalProperties": False}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Report the size."""
        assert ctx.image is not None
        return ToolOutput(text=f"{ctx.image.width}x{ctx.image.height}")


@pytest.fixture(scope="module")
def servers() -> Iterator[FakeSearchServers]:
    """The fake detection server (for label_bbox)."""
    with FakeSearchServers() as fake:
        fake.detections = {"person": [(0.9, [128, 64, 384, 512])]}
        yield fake


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A receipt rendered with known text, a photo with one face, and a one-document corpus."""
    folder = tmp_path_factory.mktemp("loop")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    return {"receipt": render_text(folder / "receipt.png", ["TOTAL 42.50"]),
            "astronaut": save_photo(folder / "astronaut.png", "astronaut"), "corpus": corpus}


@pytest.fixture
def vlm() -> Iterator[FakeVLM]:
    """A fresh scripted fake VLM."""
    with FakeVLM() as fake:
        yield fake


class Harness:
    """The engine pieces a run wires together, pointed at the fakes."""

    def __init__(self, vlm: FakeVLM, files: dict[str, Path], servers: FakeSearchServers, *, max_turns: int = 6,
                 repair_attempts: int = 2, rag: bool = True, final_answer: str = "model",
                 limits: TextLimits | None = None) -> None:
        self.files = files
        self.images = ImageStore()
        self.backend = vlm_backend(vlm.base_url)
        self.client = EngineClient(self.backend, Scheduler(SchedulerSettings(backoff_base_s=0.01, backoff_max_s=0.05)),
                                   self.images)
        tools = [ImageCaptionTool(), OCRTool(), FaceDetectionTool(),
                 LabelBoxTool(detector={"name": "http", "url": servers.url("/detect")}), ImageStatsTool()]
        self.runner = ToolRunner(tools, self.images, llm=self.client, workers=2)
        search = LocalCorpusSearch(corpus=str(files["corpus"])) if rag else None
        self.loop = RationaleLoop(self.client, self.runner, search,
                                  LoopSettings(max_turns=max_turns, repair_attempts=repair_attempts,
                                               final_answer=final_answer,  # type: ignore[arg-type]
                                               limits=limits or TextLimits()))

    def run(self, image: str = "receipt", question: str = QUESTION, answer: str = "42.50",
            constraint: str = CONSTRAINT) -> Trace:
        """Run the loop on one sample."""
        sample = SourceSample(id=f"test/{image}", source="test", question=question, answers=[answer],
                              constraint=constraint, images=[image_ref_from_file(self.files[image])])
        trace = Trace(id=sample.id, sample=sample, tools=list(self.runner.tools),
                      provenance=Provenance(mmat_version="test", generator="fake", offline=False, source="test"))

        async def go() -> Trace:
            try:
                return await self.loop.run(trace)
            finally:
                await self.backend.aclose()

        try:
            return asyncio.run(go())
        finally:
            self.runner.close()


def j(obj: dict[str, Any]) -> str:
    """A step as the fake sends it."""
    return json.dumps(obj)


def test_tool_and_rag_results_come_back_in_the_exact_user_turn_templates(vlm, files, servers) -> None:
    first = step("The receipt's total is printed on it; I will read it and check where the cafe is.", ["ocr"],
                 rag="Greenleaf Cafe Harbour Road")
    last = step("The printed total is the amount asked for.", final=True)
    vlm.script(QUESTION, [first, last], answer="42.50")
    trace = Harness(vlm, files, servers).run()
    system = vlm.dialogue(QUESTION)[0]
    assert vlm.dialogue(QUESTION)[1:] == [
        ("user", FIRST),
        ("assistant", j(first)),
        ("user", "Here are ocr results from the previous step: TOTAL 42.50 Here are rag results from the previous "
                 "step: [1] Greenleaf Cafe: The Greenleaf Cafe is a coffee shop on Harbour Road. "
                 "Please continue your reasoning."),
        ("assistant", j(last)),
        ("user", FINAL),
        ("assistant", "42.50"),
    ]
    assert system[0] == "system" and "the correct answer: 42.50" in system[1]
    assert trace.final_answer == "42.50" and trace.status == "kept"
    assert [s.signal for s in trace.steps] == ["continue", "end"]


def test_a_step_without_operators_gets_the_no_tool_sentence(vlm, files, servers) -> None:
    vlm.script(QUESTION, [step("Think first."), step("Done.", final=True)], answer="42.50")
    Harness(vlm, files, servers).run()
    assert vlm.dialogue(QUESTION)[3] == ("user", "No additional operator or rag results were selected in the previous "
                                                 "step. Please continue your reasoning.")


def test_the_first_turn_carries_the_image(vlm, files, servers) -> None:
    vlm.script(QUESTION, [step("Done.", final=True)], answer="42.50")
    Harness(vlm, files, servers).run()
    assert [r.images for r in vlm.recorded(QUESTION)] == [1, 1]


def test_malformed_json_is_repaired_by_a_re_ask_that_stays_out_of_the_dialogue(vlm, files, servers) -> None:
    good = step("Reading the total.", final=True)
    vlm.script(QUESTION, ['{"thought": "oops", }', j(good)], answer="42.50")
    trace = Harness(vlm, files, servers).run()
    repair = vlm.recorded(QUESTION, "rationale_step")[1].messages
    error = "invalid JSON (Expecting property name enclosed in double quotes at position 20)"
    assert [(m["role"], m["text"]) for m in repair[-2:]] == [
        ("assistant", '{"thought": "oops", }'), ("user", prompts.REPAIR_PROMPT.format(error=error))]
    assert [text for _, text in vlm.dialogue(QUESTION)[1:]] == [FIRST, j(good), FINAL, "42.50"]
    assert trace.notes == [f"step_repair: turn 1 attempt 1: {error}"]


def test_a_step_that_stays_malformed_after_the_re_asks_fails_the_sample(vlm, files, servers) -> None:
    vlm.script(QUESTION, ["not json", "still not json"], answer="42.50")
    trace = Harness(vlm, files, servers, repair_attempts=1).run()
    assert (trace.status, trace.failure, trace.final_answer) == ("failed", "malformed_step", None)
    assert [r.purpose for r in vlm.recorded(QUESTION)] == ["rationale_step", "rationale_step"]


def test_an_operator_that_is_not_enabled_is_repaired_naming_the_allowed_ones(vlm, files, servers) -> None:
    vlm.script(QUESTION, [j(step("Zoom in.", ["zoom"])), step("Done.", final=True)], answer="42.50")
    trace = Harness(vlm, files, servers).run()
    assert trace.notes == ["step_repair: turn 1 attempt 1: operators/0: 'zoom' is not an operator of this run; "
                           "allowed: image_caption, ocr, face_detection, label_bbox, image_stats"]


def test_a_rag_request_in_a_run_without_search_is_repaired(vlm, files, servers) -> None:
    vlm.script(QUESTION, [step("Look it up.", rag="cafe"), step("Done.", final=True)], answer="42.50")
    trace = Harness(vlm, files, servers, rag=False).run()
    assert trace.notes[0].endswith('rag: web search is not available in this run; set "needed" to false')


def test_a_thought_that_leans_on_the_known_answer_is_flagged(vlm, files, servers) -> None:
    vlm.script(QUESTION, [step("The given answer is 42.50, so I will find support for it.", ["ocr"]),
                          step("The receipt agrees.", final=True)], answer="42.50")
    trace = Harness(vlm, files, servers).run()
    assert [s.leaks_answer for s in trace.steps] == [True, False]
    assert "answer_leak: step 1" in trace.notes


def test_the_turn_cap_closes_the_loop_and_asks_for_the_answer(vlm, files, servers) -> None:
    steps = [step("Read it.", ["ocr"]), step("Look for faces too.", ["face_detection"]), step("never asked")]
    vlm.script(QUESTION, steps, answer="42.50")
    trace = Harness(vlm, files, servers, max_turns=2).run()
    assert [text for _, text in vlm.dialogue(QUESTION)[1:]] == [
        FIRST, j(steps[0]), "Here are ocr results from the previous step: TOTAL 42.50 Please continue your reasoning.",
        j(steps[1]), FINAL, "42.50"]
    assert trace.notes == ["turn_cap_reached: not run: face_detection"]
    assert (trace.steps[-1].signal, trace.steps[-1].operators, trace.steps[-1].tool_calls) == ("end", [], [])


def test_caption_runs_before_label_bbox_which_detects_the_scene_graph_objects(vlm, files, servers) -> None:
    question = "What is the person holding?"
    graph = {"objects": ["person", "flag"], "attributes": [{"name": "person", "value": "smiling"}],
             "relationships": [{"person": {"holding": ["helmet"]}}]}
    vlm.script(question, [step("Describe and locate.", ["label_bbox", "image_caption"]), step("Done.", final=True)],
               answer="helmet", scene_graph=graph, caption="An astronaut in a white suit.")
    trace = Harness(vlm, files, servers).run(image="astronaut", question=question, answer="helmet")
    observation = vlm.dialogue(question)[3][1]
    assert observation == (
        "Here are label bbox results from the previous step: "
        '{"person": [[0.25, 0.125, 0.75, 1.0]], "flag": [], "helmet": []} '
        "Here are image caption results from the previous step: An astronaut in a white suit. "
        "Please continue your reasoning.")
    assert servers.requests[-1].body["labels"] == ["person", "flag", "helmet"]
    assert [r.purpose for r in vlm.recorded(question)] == ["rationale_step", "scene_graph", "caption",
                                                           "rationale_step", "final_answer"]
    assert trace.steps[0].tool_calls[1].usage.calls == 2  # the caption's two model calls are counted


def test_operator_arguments_are_validated_and_passed_to_the_tool(vlm, files, servers) -> None:
    vlm.script(QUESTION, [step("Find the person.", [{"name": "label_bbox", "args": {"objects": ["person"]}}]),
                          step("Done.", final=True)], answer="42.50")
    trace = Harness(vlm, files, servers).run(image="astronaut")
    call = trace.steps[0].tool_calls[0]
    assert (call.name, call.args, call.data["boxes"]) == ("label_bbox", {"objects": ["person"]},
                                                         {"person": [[0.25, 0.125, 0.75, 1.0]]})


def test_a_failing_tool_becomes_an_observation_and_an_error_count(vlm, files, servers) -> None:
    servers.fail_next("/detect", 500)
    harness = Harness(vlm, files, servers)
    vlm.script(QUESTION, [step("Locate.", ["label_bbox"]), step("Done.", final=True)], answer="42.50")
    trace = harness.run()
    assert vlm.dialogue(QUESTION)[3][1].startswith(
        "Here are label bbox results from the previous step: The label_bbox operator failed: RuntimeError: "
        "detection server answered HTTP 500")
    assert harness.runner.errors == {"label_bbox": 1} and trace.status == "kept"


def test_a_server_error_from_the_vlm_is_retried_without_changing_the_dialogue(vlm, files, servers) -> None:
    good = step("Done.", final=True)
    vlm.script(QUESTION, [Fault(500), good], answer="42.50")
    Harness(vlm, files, servers).run()
    assert [text for _, text in vlm.dialogue(QUESTION)[1:]] == [FIRST, j(good), FINAL, "42.50"]


def test_every_step_call_result_timing_and_token_count_lands_in_the_trace(vlm, files, servers) -> None:
    vlm.script(QUESTION, [step("Read.", ["ocr", "image_stats"], rag="Greenleaf Cafe"), step("Done.", final=True)],
               answer="42.50")
    trace = Harness(vlm, files, servers).run()
    first = trace.steps[0]
    assert [(c.name, c.result) for c in first.tool_calls] == [("ocr", "TOTAL 42.50"), ("image_stats", "520x200")]
    assert first.rag is not None and first.rag.hits[0].title == "Greenleaf Cafe"
    assert all(s.model_call is not None and s.model_call.usage.prompt_tokens > 0 for s in trace.steps)
    assert trace.final_call is not None and trace.usage.calls == 3
    assert trace.usage.prompt_tokens > 0 and trace.usage.completion_tokens > 0
    assert {"rationale_s", "tools_s"} <= set(trace.timings) and first.tool_calls[0].latency_s > 0


def test_a_third_party_tool_appears_in_the_generator_and_rr_system_prompts(vlm, files, servers) -> None:
    harness = Harness(vlm, files, servers)
    vlm.script(QUESTION, [step("Done.", final=True)], answer="42.50")
    harness.run()
    line = "- image_stats: measure the image's width and height"
    assert line in vlm.dialogue(QUESTION)[0][1]
    assert line in prompts.rr_system(harness.runner.infos())
    assert '- label_bbox: locate the objects' in vlm.dialogue(QUESTION)[0][1]
    assert "Arguments: objects (optional list of string: names of the objects to locate)." in vlm.dialogue(QUESTION)[0][1]
