"""Realistic RR and ORR training files for the trainer tests, made with mmat's own formatters.

Traces are assembled by hand (questions about three scikit-image photos, operator results, a
reflection on some) and turned into ``rr.jsonl`` / ``orr.jsonl`` lines by
:mod:`mmat_core.formatting`, exactly as ``mmat build`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmat_core import formatting, prompts
from mmat_core.components import ToolInfo
from mmat_core.images import image_ref_from_file
from mmat_core.models import Provenance, SourceSample, Step, ToolCall, Trace

TOOLS = [
    ToolInfo(name="image_caption", label="image caption", description="describe the image in a short caption"),
    ToolInfo(name="ocr", label="ocr", description="read the text in the image"),
    ToolInfo(name="face_detection", label="face detection", description="detect human faces"),
]
PHOTOS = {"astronaut": "a person in a white space suit in front of a flag",
          "chelsea": "a ginger cat lying down",
          "coffee": "a cup of coffee on a saucer"}
QUESTIONS = [
    ("What is shown in the picture?", "{subject}"),
    ("How many faces can be seen?", "{faces}"),
    ("What colour dominates the image?", "{colour}"),
    ("Is there an animal in the image?", "{animal}"),
]
FACTS = {
    "astronaut": {"subject": "astronaut", "faces": "1", "colour": "white", "animal": "no"},
    "chelsea": {"subject": "cat", "faces": "0", "colour": "orange", "animal": "yes"},
    "coffee": {"subject": "coffee", "faces": "0", "colour": "brown", "animal": "no"},
}


def write_photos(folder: Path, side: int = 48) -> dict[str, Path]:
    """Save the three scikit-image photos, downscaled, as PNG files."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        image.thumbnail((side, side))
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    return paths


def make_trace(index: int, photo: str, path: Path) -> Trace:
    """One finished trace: a caption step, a face or OCR step, sometimes a reflection, then the answer."""
    question, template = QUESTIONS[index % len(QUESTIONS)]
    answer = template.format(**FACTS[photo])
    sample = SourceSample(id=f"s{index}", source="test", question=question, answers=[answer],
                          constraint=" " + prompts.RESPONSE_CONSTRAINTS["word_or_phrase"], images=[image_ref_from_file(path)])
    caption = ToolCall(name="image_caption", result=PHOTOS[photo])
    faces = ToolCall(name="face_detection", result="There is one face with a coordinate: [10, 8, 30, 28]"
                     if photo == "astronaut" else "There is no face in the image.")
    steps = [
        Step(thought=f"I need to see what the image holds to answer: {question}", operators=["image_caption"],
             tool_calls=[caption], observation=prompts.observation([("image caption", caption.result)])),
        Step(thought="Faces may matter, so I check for them.", operators=["face_detection"], tool_calls=[faces],
             observation=prompts.observation([("face detection", faces.result)])),
        Step(thought=f"The caption and the detector agree, so the answer is {answer}.", signal="end"),
    ]
    if index % 3 == 0:
        steps.insert(2, Step(kind="reflection", thought="Wait, let me re-check the caption.", signal="reflection",
                             observation=prompts.REFLECTION_TURN))
    provenance = Provenance(mmat_version="0", generator="offline:test", offline=True, source="test")
    return Trace(id=sample.id, sample=sample, steps=steps, final_prompt=prompts.final_turn(question),
                 final_answer=answer, provenance=provenance)


def write_training_files(folder: Path, count: int = 16) -> tuple[Path, Path]:
    """Write ``count`` RR records to rr/rr.jsonl and ``count`` ORR records to orr/orr.jsonl."""
    photos = write_photos(folder / "images")
    names = list(photos)
    traces = [make_trace(i, names[i % len(names)], photos[names[i % len(names)]]) for i in range(count)]
    rr = folder / "rr" / "rr.jsonl"
    orr = folder / "orr" / "orr.jsonl"
    for path, view in ((rr, lambda t: formatting.rr_messages(t, TOOLS)), (orr, formatting.orr_messages)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(formatting.training_record(trace, view(trace))) + "\n" for trace in traces)
    return rr, orr


def corpus_texts(*files: Path) -> list[str]:
    """Every message text of the files, to train the tiny tokenizer on."""
    texts = []
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            texts.extend(message["content"] for message in json.loads(line)["messages"])
    return texts
