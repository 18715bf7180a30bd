"""Tiny local copies of the paper's eight benchmarks, in the layout each is published in on the Hub.

lmms-eval's tasks load their data with ``datasets.load_dataset(dataset_path, split=...)``. On a
machine without internet the same call works on a local folder laid out like the Hub repository:
``README.md`` (the dataset card, whose ``configs`` map each split to its parquet files) and
``data/<split>-00000-of-00001.parquet``. This module writes such folders with a few rows each,
images drawn with Pillow, the columns each lmms-eval task reads (taken from the task's utils in
lmms-eval 0.7.3) and their Hugging Face feature types in the parquet metadata, so the tasks' own
``doc_to_*`` functions and metrics run on them unchanged. A real snapshot of the repository
(``huggingface-cli download --repo-type dataset ID --local-dir ROOT/ID``) has the same shape and
is read the same way; see docs/evaluation.md.

``python -m mmat_plugins.evaluation.lmms.fixtures ROOT`` writes all eight under ROOT. Each row's
expected answer is in :func:`fixture_answers` (question -> answer), for tests that script a model.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Feature types as ``datasets`` writes them into parquet metadata (the pre-4.0 spelling, which
#: every datasets version reads, so a fixture written here loads in lmms-eval's own environment).
STRING: dict[str, Any] = {"dtype": "string", "_type": "Value"}
INT: dict[str, Any] = {"dtype": "int64", "_type": "Value"}
FLOAT: dict[str, Any] = {"dtype": "float64", "_type": "Value"}
IMAGE: dict[str, Any] = {"_type": "Image"}


def string_list() -> dict[str, Any]:
    """A list-of-strings feature."""
    return {"feature": dict(STRING), "_type": "Sequence"}


def draw(text: str, shape: str = "box", size: tuple[int, int] = (160, 96)) -> bytes:
    """A small PNG with a shape and a line of text (the OCR and caption tools have something to read)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse((10, 10, 60, 60), outline="red", width=3)
    elif shape == "triangle":
        pen.polygon([(10, 60), (60, 60), (35, 12)], outline="blue")
    else:
        pen.rectangle((10, 10, 60, 60), outline="green", width=3)
    pen.text((70, 30), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_cell(text: str, shape: str = "box", name: str = "image.png") -> dict[str, Any]:
    """An ``Image()`` cell as datasets stores it: encoded bytes and a path."""
    return {"bytes": draw(text, shape), "path": name}


def arrow_type(feature: Any) -> Any:
    """The Arrow type datasets uses for a feature (explicit, so all-null columns keep their type)."""
    import pyarrow as pa

    if isinstance(feature, dict) and feature.get("_type") == "Value":
        return {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}[feature["dtype"]]
    if isinstance(feature, dict) and feature.get("_type") == "Image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if isinstance(feature, dict) and feature.get("_type") == "Sequence":
        return pa.list_(arrow_type(feature["feature"]))
    return pa.struct([(name, arrow_type(sub)) for name, sub in feature.items()])


class Benchmark:
    """One fixture: Hub id, split, columns with their feature types, and the rows."""

    def __init__(self, repo_id: str, split: str, features: dict[str, Any], rows: list[dict[str, Any]],
                 answers: dict[str, str]) -> None:
        self.repo_id = repo_id
        self.split = split
        self.features = features
        self.rows = rows
        self.answers = answers

    def write(self, root: Path) -> Path:
        """Write the card and the parquet file under ``root/<repo_id>``; returns that folder."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = root / self.repo_id
        (folder / "data").mkdir(parents=True, exist_ok=True)
        schema = pa.schema([(name, arrow_type(feature)) for name, feature in self.features.items()])
        table = pa.table({name: [row.get(name) for row in self.rows] for name in self.features}, schema=schema)
        metadata = {b"huggingface": json.dumps({"info": {"features": self.features}}).encode()}
        table = table.replace_schema_metadata(metadata)
        pq.write_table(table, folder / "data" / f"{self.split}-00000-of-00001.parquet")
        card = ("---\nconfigs:\n- config_name: default\n  data_files:\n"
                f"  - split: {self.split}\n    path: data/{self.split}-*\n---\n"
                f"# {self.repo_id} (mmat test fixture)\n\n{len(self.rows)} rows drawn by mmat in the published "
                "layout of this dataset; not the real benchmark.\n")
        (folder / "README.md").write_text(card, encoding="utf-8")
        return folder


def mmstar() -> Benchmark:
    """Lin-Chen/MMStar, split ``val``: index, question (options inline), image, answer letter, categories."""
    rows = [
        {"index": 0, "question": "Which shape is drawn? Options: A: circle, B: square, C: triangle, D: star",
         "image": image_cell("shape", "box"), "answer": "B", "category": "coarse perception",
         "l2_category": "image scene and topic", "meta_info": json.dumps({"source": "mmat-fixture"})},
        {"index": 1, "question": "What colour is the outline? Options: A: red, B: blue, C: green, D: black",
         "image": image_cell("colour", "circle"), "answer": "A", "category": "fine-grained perception",
         "l2_category": "attribute recognition", "meta_info": json.dumps({"source": "mmat-fixture"})},
    ]
    features = {"index": INT, "question": STRING, "image": IMAGE, "answer": STRING, "category": STRING,
                "l2_category": STRING, "meta_info": STRING}
    return Benchmark("Lin-Chen/MMStar", "val", features, rows, {r["question"]: r["answer"] for r in rows})


def mmmu() -> Benchmark:
    """MMMU (lmms-lab layout), split ``validation``: id ``validation_<Subject>_<n>``, options as a list literal."""
    base = {"explanation": "", "img_type": "['Diagrams']", "topic_difficulty": "Easy", "subfield": "Geometry"}
    rows = [
        {**base, "id": "validation_Math_1", "question": "<image 1> How many sides does the shape have?",
         "options": "['3', '4', '5', '6']", "answer": "B", "question_type": "multiple-choice",
         "image_1": image_cell("sides", "box")},
        {**base, "id": "validation_Art_2", "question": "<image 1> What is written next to the shape?",
         "options": "[]", "answer": "hello", "question_type": "open", "image_1": image_cell("hello", "circle"),
         "subfield": "Drawing"},
    ]
    features = {"id": STRING, "question": STRING, "options": STRING, "explanation": STRING,
                **{f"image_{n}": IMAGE for n in range(1, 8)}, "img_type": STRING, "answer": STRING,
                "topic_difficulty": STRING, "question_type": STRING, "subfield": STRING}
    return Benchmark("lmms-lab-encoder/MMMU", "validation", features, rows, {
        rows[0]["question"]: "B", rows[1]["question"]: "hello"})


def mathvista() -> Benchmark:
    """AI4Math/MathVista, split ``testmini``: pid, query, decoded_image, choices, answer and type fields, metadata."""
    def metadata(category: str) -> dict[str, Any]:
        return {"split": "testmini", "language": "english", "img_width": 160, "img_height": 96,
                "source": "mmat-fixture", "category": category, "task": "figure question answering",
                "context": "geometry diagram", "grade": "high school", "skills": ["arithmetic reasoning"]}

    rows = [
        {"pid": "1", "question": "How many corners does the drawn square have?", "image": "images/1.png",
         "decoded_image": image_cell("corners", "box", "images/1.png"), "choices": None, "unit": None,
         "precision": None, "answer": "4", "question_type": "free_form", "answer_type": "integer",
         "metadata": metadata("math-targeted-vqa"),
         "query": "Hint: Please answer the question requiring an integer answer and provide the final value, "
                  "e.g., 1, 2, 3, at the end.\nQuestion: How many corners does the drawn square have?"},
        {"pid": "2", "question": "Which figure is drawn here?", "image": "images/2.png",
         "decoded_image": image_cell("which", "triangle", "images/2.png"), "choices": ["circle", "triangle"],
         "unit": None, "precision": None, "answer": "triangle", "question_type": "multi_choice",
         "answer_type": "text", "metadata": metadata("general-vqa"),
         "query": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
                  "at the end.\nQuestion: Which figure is drawn here?\nChoices:\n(A) circle\n(B) triangle"},
    ]
    features = {"pid": STRING, "question": STRING, "image": STRING, "decoded_image": IMAGE, "choices": string_list(),
                "unit": STRING, "precision": FLOAT, "answer": STRING, "question_type": STRING, "answer_type": STRING,
                "metadata": {"split": STRING, "language": STRING, "img_width": INT, "img_height": INT, "source": STRING,
                             "category": STRING, "task": STRING, "context": STRING, "grade": STRING,
                             "skills": string_list()},
                "query": STRING}
    return Benchmark("AI4Math/MathVista", "testmini", features, rows, {
        rows[0]["question"]: "4", rows[1]["question"]: "B"})


def mathvision() -> Benchmark:
    """MathLLMs/MathVision, split ``testmini``: options list (empty for free-form), answer letter or value."""
    rows = [
        {"id": "1", "question": "How many sides has the drawn polygon?", "options": ["3", "4", "5"],
         "image": "images/1.png", "decoded_image": image_cell("polygon", "triangle", "images/1.png"),
         "answer": "A", "solution": "", "level": 1, "subject": "metric geometry - counting"},
        {"id": "2", "question": "What is 2 + 3?", "options": [], "image": "images/2.png",
         "decoded_image": image_cell("2 + 3", "box", "images/2.png"), "answer": "5", "solution": "", "level": 1,
         "subject": "arithmetic"},
    ]
    features = {"id": STRING, "question": STRING, "options": string_list(), "image": STRING, "decoded_image": IMAGE,
                "answer": STRING, "solution": STRING, "level": INT, "subject": STRING}
    return Benchmark("MathLLMs/MathVision", "testmini", features, rows, {
        rows[0]["question"]: "A", rows[1]["question"]: "5"})


def ai2d() -> Benchmark:
    """AI2D (lmms-lab layout), split ``test``: options list and the answer's index as a string."""
    rows = [
        {"question": "Which part of the diagram is round?", "options": ["the square", "the circle"], "answer": "1",
         "image": image_cell("diagram", "circle")},
        {"question": "What label is on the diagram?", "options": ["leaf", "root", "stem"], "answer": "2",
         "image": image_cell("stem", "box")},
    ]
    features = {"question": STRING, "options": string_list(), "answer": STRING, "image": IMAGE}
    return Benchmark("lmms-lab-encoder/ai2d", "test", features, rows, {
        rows[0]["question"]: "B", rows[1]["question"]: "C"})


def ocrbench() -> Benchmark:
    """echo840/OCRBench, split ``test``: source dataset, question, question type, answers, image."""
    rows = [
        {"dataset": "IIIT5K", "question": "what is written in the image?", "question_type": "Regular Text Recognition",
         "answer": ["MMAT"], "image": image_cell("MMAT", "box")},
        {"dataset": "docVQA", "question": "What is the total on the receipt?", "question_type": "Doc-oriented VQA",
         "answer": ["42"], "image": image_cell("TOTAL 42", "box")},
    ]
    features = {"dataset": STRING, "question": STRING, "question_type": STRING, "answer": string_list(),
                "image": IMAGE}
    return Benchmark("echo840/OCRBench", "test", features, rows, {
        rows[0]["question"]: "MMAT", rows[1]["question"]: "42"})


def realworldqa() -> Benchmark:
    """RealWorldQA (lmms-lab layout), split ``test``: image, question (with its own instruction), answer."""
    rows = [
        {"question": "Is there a circle in the picture?\nA. yes\nB. no\nPlease answer directly with only the "
                     "letter of the correct option and nothing else.", "answer": "A",
         "image": image_cell("road", "circle")},
        {"question": "How many shapes are drawn? Please answer directly with a single word or number.",
         "answer": "1", "image": image_cell("count", "box")},
    ]
    features = {"image": IMAGE, "question": STRING, "answer": STRING}
    return Benchmark("lmms-lab-encoder/RealWorldQA", "test", features, rows, {
        rows[0]["question"]: "A", rows[1]["question"]: "1"})


def hallusion_bench() -> Benchmark:
    """HallusionBench (lmms-lab layout), split ``image``: VS/VD question pairs keyed by set, figure, question ids."""
    base = {"visual_input": "1", "sample_note": "fixture", "set_id": "0", "question_id": "0"}
    rows = [
        {**base, "category": "VD", "subcategory": "illusion", "figure_id": "0",
         "question": "Is the drawn shape a circle?", "gt_answer_details": "Yes, the shape is a circle.",
         "gt_answer": "1", "filename": "VD/illusion/0_0.png", "image": image_cell("round", "circle")},
        {**base, "category": "VD", "subcategory": "illusion", "figure_id": "1",
         "question": "Is the drawn shape a circle here?", "gt_answer_details": "No, the shape is a square.",
         "gt_answer": "0", "filename": "VD/illusion/0_1.png", "image": image_cell("square", "box")},
    ]
    features = {"category": STRING, "subcategory": STRING, "visual_input": STRING, "set_id": STRING,
                "figure_id": STRING, "sample_note": STRING, "question_id": STRING, "question": STRING,
                "gt_answer_details": STRING, "gt_answer": STRING, "filename": STRING, "image": IMAGE}
    return Benchmark("lmms-lab-encoder/HallusionBench", "image", features, rows, {
        rows[0]["question"]: "Yes", rows[1]["question"]: "No"})


#: Benchmark key (as in :mod:`mmat_plugins.evaluation.lmms.suite`) -> fixture builder.
BUILDERS: dict[str, Callable[[], Benchmark]] = {
    "mmstar": mmstar, "mmmu": mmmu, "mathvista": mathvista, "mathvision": mathvision, "ai2d": ai2d,
    "ocrbench": ocrbench, "realworldqa": realworldqa, "hallusionbench": hallusion_bench,
}


def fixture_answers() -> dict[str, str]:
    """Every fixture question -> the answer that scores it right. The question is given by its first
    line without image placeholders (``<image 1>``): the part every task's prompt repeats verbatim."""
    answers: dict[str, str] = {}
    for build in BUILDERS.values():
        for question, answer in build().answers.items():
            answers[re.sub(r"<image \d+>\s*", "", question).splitlines()[0].strip()] = answer
    return answers


def write_fixtures(root: Path) -> dict[str, Path]:
    """Write all eight fixtures under ``root``; returns benchmark key -> its folder."""
    root.mkdir(parents=True, exist_ok=True)
    return {key: build().write(root) for key, build in BUILDERS.items()}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mmat_plugins.evaluation.lmms.fixtures ROOT")
    for key, folder in write_fixtures(Path(sys.argv[1])).items():
        print(f"{key}: {folder}")
