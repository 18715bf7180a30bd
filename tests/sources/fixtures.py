"""Small copies of each collection in its real published layout, with real images: photos from
the scikit-image wheel and charts, tables and documents rendered with PIL."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw


def photo(name: str = "astronaut", size: int = 128) -> Image.Image:
    """A real photo from the scikit-image wheel, downscaled."""
    from skimage import data

    array = getattr(data, name)()
    image = Image.fromarray(array).convert("RGB")
    image.thumbnail((size, size))
    return image


def chart(values: dict[str, float], title: str = "Sales") -> Image.Image:
    """A bar chart rendered with PIL."""
    image = Image.new("RGB", (240, 160), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 4), title, fill="black")
    top = max(values.values()) or 1
    for i, (label, value) in enumerate(values.items()):
        x = 20 + i * 50
        height = int(110 * value / top)
        draw.rectangle([x, 140 - height, x + 30, 140], fill=(40, 90 + 40 * i, 200))
        draw.text((x, 144), label, fill="black")
        draw.text((x, 126 - height), str(value), fill="black")
    return image


def table(rows: list[list[str]]) -> Image.Image:
    """A table rendered with PIL (TabMWP's tables are images like this)."""
    image = Image.new("RGB", (60 + 90 * len(rows[0]), 30 + 24 * len(rows)), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            draw.rectangle([10 + 90 * c, 10 + 24 * r, 100 + 90 * c, 34 + 24 * r], outline="black")
            draw.text((16 + 90 * c, 16 + 24 * r), cell, fill="black")
    return image


def document(lines: list[str]) -> Image.Image:
    """A text document page rendered with PIL."""
    image = Image.new("RGB", (220, 40 + 18 * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((12, 14 + 18 * i), line, fill="black")
    return image


def save(image: Image.Image, path: Path, fmt: str | None = None) -> Path:
    """Write an image (format from the suffix unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt)
    return path


def png_bytes(image: Image.Image) -> bytes:
    """An image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON value a line (strings already encoded are written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for row in rows:
            fh.write(row if isinstance(row, bytes) else json.dumps(row).encode())
            fh.write(b"\n")
    return path


def visual_cot(root: Path) -> Path:
    """Visual CoT: metadata/<set>_cot_train.jsonl and cot/<set>/ images (textcap reads textvqa's)."""
    save(photo("astronaut"), root / "cot/gqa/2354786.jpg")
    save(photo("chelsea"), root / "cot/gqa/2375383.jpg")
    save(document(["INVOICE 0042", "Total: $118.00", "Due: 2024-03-01"]), root / "cot/docvqa/ffbf0023_4.png")
    save(document(["OPEN 24 HOURS", "Joe's Diner"]), root / "cot/textvqa/b0c2e7b6.jpg")
    write_jsonl(root / "metadata/gqa_cot_train.jsonl", [
        {"question": "What is the person holding?", "answer": "a helmet", "image": "2354786.jpg", "width": 128,
         "height": 128, "bboxs": [[30, 60, 90, 120]], "dataset": "gqa", "split": "train"},
        {"question": "What animal is lying on the table?", "answer": "the cat", "image": "2375383.jpg", "width": 128,
         "height": 85, "bboxs": [[10, 5, 120, 80]], "dataset": "gqa", "split": "train"},
    ])
    write_jsonl(root / "metadata/docvqa_cot_train.jsonl", [
        {"question": "What is the total on the invoice?", "answer": "$118.00", "image": "ffbf0023_4.png", "width": 220,
         "height": 94, "bboxs": [[12, 32, 120, 46]], "dataset": "docvqa", "split": "train"},
    ])
    write_jsonl(root / "metadata/textcap_cot_train.jsonl", [
        {"question": "What does the sign say?", "answer": "The sign says the diner is open around the clock every day",
         "image": "b0c2e7b6.jpg", "width": 220, "height": 76, "bboxs": [[12, 14, 140, 30]], "dataset": "textcap",
         "split": "train"},
    ])
    return root


def _cot(conclusion: str) -> str:
    return (f"<SUMMARY>I will read the image.</SUMMARY>\n\n<CAPTION>An image.</CAPTION>\n\n"
            f"<REASONING>Looking closely gives the answer.</REASONING>\n\n<CONCLUSION>{conclusion}</CONCLUSION>")


def llava_cot(root: Path) -> Path:
    """LLaVA-CoT-100k: train.jsonl with image paths under their source set's folder."""
    save(chart({"2019": 12, "2020": 18, "2021": 25}, "Units sold"), root / "chartqa/train/png/two_col_100466.png")
    save(photo("coffee"), root / "sqa/train/4251/image.png")
    save(photo("astronaut"), root / "coco/train2017/000000000009.jpg")
    write_jsonl(root / "train.jsonl", [
        {"id": "chartqa_1", "image": "chartqa/train/png/two_col_100466.png", "conversations": [
            {"from": "human", "value": "<image>\nHow many units were sold in 2021?"},
            {"from": "gpt", "value": _cot("25")},
            {"from": "human", "value": "Which year sold the fewest units?"},
            {"from": "gpt", "value": _cot("2019")}]},
        {"id": "sqa_7", "image": "sqa/train/4251/image.png", "conversations": [
            {"from": "human", "value": "What is in the cup?\nOptions:\nA. coffee\nB. soup\nC. milk"},
            {"from": "gpt", "value": _cot("A")}]},
        {"id": "coco_3", "image": "coco/train2017/000000000009.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe what the person wears."},
            {"from": "gpt", "value": _cot("A white spacesuit with a patch on the shoulder and a helmet under the arm")}]},
        {"id": "text_only", "conversations": [
            {"from": "human", "value": "What is 2 + 2?"}, {"from": "gpt", "value": _cot("4")}]},
    ])
    return root


def cauldron(root: Path, subsets: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """The Cauldron: <config>/train-00000-of-00001.parquet with embedded image bytes, written by
    ``datasets`` with the card's features (a sequence of Image and a list of {user, assistant, source})."""
    import datasets

    features = datasets.Features({
        "images": datasets.Sequence(datasets.Image()),
        "texts": [{"user": datasets.Value("string"), "assistant": datasets.Value("string"), "source": datasets.Value("string")}],
    })
    subsets = subsets or {
        "chartqa": [
            {"images": [chart({"Mon": 3, "Tue": 7, "Wed": 5}, "Visitors")], "texts": [
                {"user": "Which day had the most visitors?\nAnswer the question using a single word or phrase.",
                 "assistant": "Tue", "source": "ChartQA"},
                {"user": "How many visitors came on Wednesday?", "assistant": "5", "source": "ChartQA"}]},
        ],
        "ai2d": [
            {"images": [photo("chelsea")], "texts": [
                {"user": "Question: What animal is shown?\nChoices:\nA. dog\nB. cat\nC. bird\nAnswer with the letter.",
                 "assistant": "Answer: B", "source": "AI2D"}]},
        ],
    }
    for subset, rows in subsets.items():
        data = {"images": [[{"bytes": png_bytes(i) if isinstance(i, Image.Image) else i, "path": None} for i in r["images"]] for r in rows],
                "texts": [r["texts"] for r in rows]}
        target = root / subset / "train-00000-of-00001.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(data, features=features).to_parquet(str(target))
    return root


def tabmwp(root: Path) -> Path:
    """TabMWP: problems_train.json (one dict from pid to record) and tables/<pid>.png."""
    save(table([["Day", "Pizzas"], ["Friday", "14"], ["Saturday", "23"]]), root / "tables/101.png")
    save(table([["Book", "Price"], ["atlas", "$12"], ["novel", "$8"]]), root / "tables/202.png")
    problems = {
        "101": {"question": "How many more pizzas were sold on Saturday than on Friday?", "choices": None, "answer": "9",
                "unit": "pizzas", "table_title": "Pizzas sold", "table": "Day | Pizzas\nFriday | 14\nSaturday | 23",
                "table_for_pd": {"Day": ["Friday", "Saturday"], "Pizzas": ["14", "23"]}, "row_num": 3, "column_num": 2,
                "solution": "23 - 14 = 9", "ques_type": "free_text", "ans_type": "integer_number", "grade": 2,
                "split": "train"},
        "202": {"question": "Which book costs more?", "choices": ["atlas", "novel"], "answer": "atlas", "unit": None,
                "table_title": "Books", "table": "Book | Price\natlas | $12\nnovel | $8",
                "table_for_pd": {"Book": ["atlas", "novel"], "Price": ["$12", "$8"]}, "row_num": 3, "column_num": 2,
                "solution": "12 > 8", "ques_type": "multi_choice", "ans_type": "extractive_text", "grade": 3,
                "split": "train"},
    }
    (root / "problems_train.json").write_text(json.dumps(problems, indent=2), encoding="utf-8")
    return root


def infoseek(root: Path) -> Path:
    """InfoSeek: infoseek_train.jsonl, OVEN images, and a user-built {image_id, image_path} map."""
    save(photo("astronaut"), root / "oven/00/oven_00012345.jpg")
    save(photo("rocket"), root / "oven/01/oven_01000001.jpg")
    write_jsonl(root / "infoseek_train.jsonl", [
        {"data_id": "infoseek_train_00000001", "image_id": "oven_00012345",
         "question": "Which space agency does this person work for?", "answer": ["NASA", "National Aeronautics and Space Administration"],
         "answer_eval": ["NASA", "nasa"], "data_split": "train"},
        {"data_id": "infoseek_train_00000002", "image_id": "oven_01000001",
         "question": "In what year was this rocket first launched?", "answer": ["1967"],
         "answer_eval": [{"wikidata": 1967.0, "range": [1966.9, 1967.1]}], "data_split": "train"},
    ])
    write_jsonl(root / "image_map.jsonl", [
        {"image_id": "oven_00012345", "image_path": "oven/00/oven_00012345.jpg"},
        {"image_id": "oven_01000001", "image_path": "oven/01/oven_01000001.jpg"},
    ])
    return root
