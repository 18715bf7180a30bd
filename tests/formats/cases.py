"""Hand-written Traces mirroring the paper's worked examples, for golden-file tests.

* ``ocr_receipt``: read a receipt with OCR, then answer (one operator step, a no-tool step, end).
* ``rag_landmark``: caption the image, search the web for a fact (RAG), answer.
* ``math_reflection``: two operators in one step, then a math critic's reflection spliced in.

Regenerate the golden files after an intended format change with
``.venv/bin/python -m tests.formats.cases --write`` and review the diff.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmat_core import prompts
from mmat_core.components import FormatContext, ToolInfo
from mmat_core.models import (
    ImageRef,
    ModelCall,
    Provenance,
    RagCall,
    SearchHit,
    SourceSample,
    Step,
    ToolCall,
    Trace,
    Usage,
)

GOLDEN = Path(__file__).parent / "golden"

TOOLS = [
    ToolInfo("image_caption", "image caption", "describe the image in a short caption focused on the question"),
    ToolInfo("ocr", "ocr", "recognise the text written in the image (documents, charts, signs, tables)"),
    ToolInfo("face_detection", "face detection", "detect human faces and give their pixel coordinates"),
]


def context(rag_enabled: bool = True) -> FormatContext:
    """The formatter context the golden files were written with."""
    return FormatContext(tools=list(TOOLS), rag_enabled=rag_enabled)


def _provenance(source: str, subset: str | None, licence: str) -> Provenance:
    return Provenance(mmat_version="0.1.0", generator="openai:gpt-4o", offline=False,
                      prompt_versions={"generator": "gen-1", "rr_system": "rr-sys-1", "orr_system": "orr-sys-1"},
                      tool_versions={"image_caption": "1", "ocr": "1"}, source=source, subset=subset, licence=licence)


def _call() -> ModelCall:
    return ModelCall(purpose="rationale_step", backend="openai", model="gpt-4o",
                     usage=Usage(prompt_tokens=800, completion_tokens=50, cost_usd=0.0025, calls=1))


def ocr_receipt() -> Trace:
    """SROIE-style receipt: OCR reads the total."""
    ocr = "SHOP 88 TOTAL 35.00 CASH 50.00 CHANGE 15.00"
    sample = SourceSample(id="viscot/sroie/0001", source="visual_cot", subset="sroie", question="What is the total amount?",
                          answers=["35.00"], constraint="\nAnswer the question using a single word or phrase.", task_type="docvqa",
                          images=[ImageRef(sha256="1" * 64, path="cot/sroie/X51005.jpg", width=463, height=1013, format="JPEG")],
                          licence="Apache-2.0")
    steps = [
        Step(thought="The question asks for the total on the receipt, so I need to read its printed text.", operators=["ocr"],
             tool_calls=[ToolCall(name="ocr", version="1", result=ocr, data={"lines": [{"text": "TOTAL 35.00"}]})],
             observation=prompts.observation([("ocr", ocr)]), model_call=_call()),
        Step(thought="The OCR line 'TOTAL 35.00' gives the amount; cash 50.00 minus change 15.00 agrees.",
             observation=prompts.NO_TOOL, model_call=_call()),
        Step(thought="The total amount printed on the receipt is 35.00.", signal="end", model_call=_call()),
    ]
    return Trace(id=sample.id, sample=sample, tools=[t.name for t in TOOLS], steps=steps,
                 final_prompt=prompts.final_turn(sample.question), final_answer="35.00", status="kept",
                 provenance=_provenance("visual_cot", "sroie", "Apache-2.0"),
                 usage=Usage(prompt_tokens=2400, completion_tokens=150, cost_usd=0.0075, calls=3))


def rag_landmark() -> Trace:
    """InfoSeek-style: a caption names the building, a web search gives the year."""
    caption = "A tall iron lattice tower on a sunny day, with a park in front of it."
    rag = "[1] Eiffel Tower: completed in 1889 for the World's Fair. [2] History: opened to the public on 15 May 1889."
    sample = SourceSample(id="infoseek/val/oven_04", source="infoseek", question="In which year was this building completed?",
                          answers=["1889"], constraint="\nAnswer the question using a single word or phrase.",
                          images=[ImageRef(sha256="2" * 64, path="oven/oven_04.jpg", width=640, height=480, format="JPEG")],
                          licence="Apache-2.0")
    steps = [
        Step(thought="I first need to know which building is shown.", operators=["image_caption"],
             tool_calls=[ToolCall(name="image_caption", version="1", result=caption)],
             observation=prompts.observation([("image caption", caption)]), model_call=_call()),
        Step(thought="The caption describes an iron lattice tower beside a park, which looks like the Eiffel Tower. "
                     "Its completion year is outside knowledge, so I will search for it.",
             rag_query="Eiffel Tower completion year",
             rag=RagCall(query="Eiffel Tower completion year", backend="local", result=rag,
                         hits=[SearchHit(title="Eiffel Tower", snippet="completed in 1889 for the World's Fair.")]),
             observation=prompts.observation([("rag", rag)]), model_call=_call()),
        Step(thought="The search results say the tower was completed in 1889.", signal="end", model_call=_call()),
    ]
    return Trace(id=sample.id, sample=sample, tools=[t.name for t in TOOLS], steps=steps,
                 final_prompt=prompts.final_turn(sample.question), final_answer="1889", status="kept",
                 provenance=_provenance("infoseek", None, "Apache-2.0"),
                 usage=Usage(prompt_tokens=2600, completion_tokens=170, cost_usd=0.008, calls=3))


def math_reflection() -> Trace:
    """TabMWP-style: read the table, compute, and a math critic adds the skipped step."""
    ocr = "Name | Stickers; Ann | 12; Bo | 9; Cy | 14"
    caption = "A small table listing three children and how many stickers each has."
    sample = SourceSample(id="tabmwp/train/1234", source="tabmwp", question="How many stickers do the three children have in all?",
                          answers=["35"], constraint="", task_type="math",
                          images=[ImageRef(sha256="3" * 64, path="tables/1234.png", width=300, height=120, format="PNG")],
                          licence="CC BY-NC-SA 4.0")
    steps = [
        Step(thought="I need the numbers in the table and what it is about.", operators=["image_caption", "ocr"],
             tool_calls=[ToolCall(name="image_caption", version="1", result=caption),
                         ToolCall(name="ocr", version="1", result=ocr)],
             observation=prompts.observation([("image caption", caption), ("ocr", ocr)]), model_call=_call()),
        Step(thought="Adding the three counts gives the total, 35.", observation=prompts.NO_TOOL, model_call=_call()),
        Step(kind="reflection", thought="Wait, let me re-check the arithmetic before answering.", signal="reflection",
             observation=prompts.REFLECTION_TURN),
        Step(kind="correction", thought="12 + 9 = 21, and 21 + 14 = 35, so the children have 35 stickers in all.", signal="end"),
    ]
    return Trace(id=sample.id, sample=sample, tools=[t.name for t in TOOLS], steps=steps,
                 final_prompt=prompts.final_turn(sample.question), final_answer="35", status="reflected",
                 provenance=_provenance("tabmwp", None, "CC BY-NC-SA 4.0"),
                 usage=Usage(prompt_tokens=3100, completion_tokens=210, cost_usd=0.0095, calls=4))


def dropped_case() -> Trace:
    """A trace the critics dropped: formatters must leave it out."""
    trace = ocr_receipt()
    return trace.model_copy(update={"id": "viscot/sroie/0002", "status": "dropped", "failure": "general: unresolved",
                                    "sample": trace.sample.model_copy(update={"id": "viscot/sroie/0002"})})


CASES = {"ocr_receipt": ocr_receipt, "rag_landmark": rag_landmark, "math_reflection": math_reflection}


def write_golden() -> None:
    """Rewrite the golden files from the cases."""
    from mmat_plugins.formatters.rr_orr import ORRFormatter, RRFormatter

    from mmat_core.writers import dumps_line

    GOLDEN.mkdir(exist_ok=True)
    for name, make in CASES.items():
        for formatter in (RRFormatter(), ORRFormatter()):
            record = formatter.record(make(), context())
            (GOLDEN / f"{name}.{formatter.name}.jsonl").write_text(dumps_line(record), encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_golden()
        print(f"wrote golden files into {GOLDEN}")
