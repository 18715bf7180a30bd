"""A small real run for the viewer tests, made by the real pipeline with the offline backend.

The tiny source holds: a rendered receipt (OCR), the scikit-image astronaut photo (real Haar face
detection, plus a test operator that reports ``label_bbox``-style normalised boxes), a knowledge
question (local retrieval), a question carrying HTML and script, one sample a test critic sends
through reflection, one it rejects, and one row quarantined at the source.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mmat_plugins.llms.offline import _TEXT_TASKS as TEXT_TASKS
from mmat_plugins.llms.offline import OfflineBackend

from mmat_core import hookimpl
from mmat_core.components import Critic, CriticContext, Source, Tool, ToolContext, ToolOutput
from mmat_core.images import image_ref_from_file
from mmat_core.models import Rejected, SourceSample, Trace, Verdict
from mmat_core.pipeline import Pipeline
from mmat_core.plugins import PluginManager

#: A question that would run script if the page ever inserted data as HTML.
XSS_QUESTION = 'What does <script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> say about the <b>total</b>?'
LABEL_BOXES = {"helmet": [[0.30, 0.05, 0.62, 0.38]], "flag": [[0.70, 0.10, 0.95, 0.30]]}


def render_receipt(path: Path) -> Path:
    """A real PNG with printed text for OCR."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (360, 160), "white")
    ImageDraw.Draw(image).text((20, 55), "TOTAL 42", fill="black", font=ImageFont.load_default(size=40))
    image.save(path)
    return path


def save_astronaut(path: Path) -> Path:
    """scikit-image's astronaut photo (public domain, ships in the wheel) as a JPEG."""
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).save(path, quality=90)
    return path


class LabelBoxTool(Tool):
    """Stands in for ``label_bbox``: reports named, normalised boxes in the same data layout."""

    name = "test_label_boxes"
    version = "1"
    description = "locate named objects (test stand-in for label_bbox)"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        text = "; ".join(f"{name}: {boxes}" for name, boxes in LABEL_BOXES.items())
        return ToolOutput(text=text, data=LABEL_BOXES)


class BoxingOfflineBackend(OfflineBackend):
    """The offline backend, which also calls the box operator on questions about people."""

    name = "offline_boxes"

    @staticmethod
    def _first_tools(ctx: dict[str, Any]) -> list[str]:
        chosen = OfflineBackend._first_tools(ctx)
        if "face_detection" in chosen and "test_label_boxes" in ctx.get("tools", []):
            chosen.append("test_label_boxes")
        return chosen

    def _rationale_step(self, ctx: dict[str, Any]) -> str:
        # The offline backend's second step calls every configured operator the first did not;
        # the viewer tests need samples that differ in the operators they called (filters,
        # boxes, dashboard counts), so here the second step adds only a caption, and only for
        # questions that are not about text.
        if int(ctx.get("turn", 0)) == 1:
            keep = {name for turn in ctx.get("history", []) for name, _ in turn["results"]}
            if ctx.get("task_type") not in TEXT_TASKS:
                keep.add("image_caption")
            ctx = {**ctx, "tools": [t for t in ctx.get("tools", []) if t in keep]}
        return super()._rationale_step(ctx)


class RecheckCritic(Critic):
    """Asks for a reflection on samples tagged ``recheck`` (once) and rejects those tagged ``reject``."""

    name = "recheck"
    version = "1"
    description = "test critic"

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        if "reject" in trace.sample.tags:
            return Verdict(critic=self.name, verdict="reject", reason="the chart is unreadable", round=ctx.round)
        if "recheck" in trace.sample.tags and ctx.round == 0:
            return Verdict(critic=self.name, verdict="fix", reason="the count skips the second column", round=ctx.round)
        return Verdict(critic=self.name, verdict="pass", round=ctx.round)


def tiny_source_class(receipt: Path, astronaut: Path) -> type[Source]:
    """The test source over the two images."""

    class ViewerTinySource(Source):
        name = "viewer_tiny"
        description = "samples for the viewer tests"
        licence = "CC0-1.0"

        def iter_rows(self) -> Iterator[SourceSample | Rejected]:
            paper, photo = image_ref_from_file(receipt), image_ref_from_file(astronaut)
            rows = [
                ("receipt-total", "docs", "What is the total?", ["42"], "docvqa", paper, []),
                ("astronaut-people", "photos", "How many people are in the image?", ["1", "one"], "vqa", photo, []),
                ("shuttle-agency", "knowledge", "Which space agency operated the Space Shuttle?", ["NASA"], "knowledge", photo, []),
                ("script-question", "docs", XSS_QUESTION, ["42"], "docvqa", paper, []),
                ("recheck-count", "docs", "What number is printed after the word?", ["42"], "docvqa", paper, ["recheck"]),
                ("rejected-chart", "docs", "What is written on the receipt?", ["TOTAL 42"], "docvqa", paper, ["reject"]),
            ]
            for key, subset, question, answers, task, image, tags in rows:
                yield SourceSample(id=f"viewer/{key}", source=self.name, subset=subset, question=question, answers=answers,
                                   task_type=task, images=[image], licence=self.licence, tags=tags)
            yield Rejected(source=self.name, subset="docs", row="rows.jsonl:7", reason="image_missing", detail="scan-0007.png")

    return ViewerTinySource


def make_plugin_manager(receipt: Path, astronaut: Path) -> PluginManager:
    """The installed plugins plus the test plugin."""
    source = tiny_source_class(receipt, astronaut)

    class ViewerTestPlugin:
        @staticmethod
        @hookimpl
        def register_sources(register: Callable) -> None:
            register(source)

        @staticmethod
        @hookimpl
        def register_tools(register: Callable) -> None:
            register(LabelBoxTool)

        @staticmethod
        @hookimpl
        def register_llms(register: Callable) -> None:
            register(BoxingOfflineBackend)

        @staticmethod
        @hookimpl
        def register_critics(register: Callable) -> None:
            register(RecheckCritic)

    manager = PluginManager()
    manager.register(ViewerTestPlugin, "viewer-test-plugin")
    return manager


@dataclass
class BuiltRun:
    """A finished run directory and the plugin manager that made it."""

    out: Path
    plugins: PluginManager

    def seq_of(self, sample_id: str) -> int:
        """The store position of a sample."""
        import sqlite3

        with sqlite3.connect(self.out / "run.sqlite") as db:
            return int(db.execute("SELECT seq FROM samples WHERE id=?", (sample_id,)).fetchone()[0])

    def exported(self, name: str) -> dict[str, dict[str, Any]]:
        """Lines of ``rr.jsonl`` or ``orr.jsonl`` by sample id."""
        lines = (self.out / name).read_text(encoding="utf-8").splitlines()
        return {record["id"]: record for record in map(json.loads, lines)}


@pytest.fixture(scope="session")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> BuiltRun:
    """One real run shared by the viewer tests (they only read it)."""
    # OpenCV imported for the first time by two tool threads at once (OCR and face detection) can
    # leave ``cv2.data`` missing in one of them; import it here first so the run is deterministic.
    import cv2

    assert cv2.data.haarcascades
    root = tmp_path_factory.mktemp("viewer-run")
    receipt = render_receipt(root / "receipt.png")
    astronaut = save_astronaut(root / "astronaut.jpg")
    manager = make_plugin_manager(receipt, astronaut)
    out = root / "run"
    Pipeline(
        source="viewer_tiny",
        llm="offline_boxes",
        tools=["ocr", "face_detection", "image_caption", "test_label_boxes"],
        critics=["answer_match", "recheck"],
        formatters=["rr", "orr"],
        plugins=manager,
    ).run(out)
    return BuiltRun(out=out, plugins=manager)
