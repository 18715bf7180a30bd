"""Make the bundled sample dataset in ``plugins/sources/sample_data/``.

What it writes:

* ``images/*.png``: charts (bar and line), documents (receipt, invoice, form, notice) and tables
  (TabMWP-style price lists and schedules), all drawn with PIL from the literal data below, so
  every answer is exact by construction;
* ``images/*.jpg``: four real photos shipped inside the scikit-image wheel (astronaut, chelsea,
  coffee, rocket), resized to at most 512 px a side;
* ``samples.jsonl``: 20 visual QA pairs, one JSON object a line with the keys
  ``id, subset, task_type, question, answers, choices, constraint, image, licence, tags``;
* ``corpus.jsonl``: short documents (``title, text, url``) that state the facts the knowledge
  questions need, for the offline ``local`` search backend.

The script is deterministic: the data are literals (no random draws at all, so no seed can drift),
it uses no network, and the only font is the one bundled in Pillow (``ImageFont.load_default``,
Pillow >= 10.1) so that two machines render the same pixels. DejaVu Sans is only a fallback for a
Pillow built without FreeType.

``--check`` runs the verification used when the data were made: RapidOCR over every rendered image
(the answer, or the numbers it is computed from, must be read back) and the OpenCV Haar face
detector over the photos (one face on the astronaut, none on the cat or the coffee). It needs
``rapidocr_onnxruntime`` and ``opencv-python``, which the generator itself does not.

Usage::

    python scripts/make_sample_data.py            # (re)write the sample data
    python scripts/make_sample_data.py --check    # write, then verify with OCR and face detection
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "plugins" / "sources" / "sample_data"
IMAGE_DIR = OUT_DIR / "images"

RENDERED_LICENCE = "CC0-1.0 (rendered by mmat)"
# Taken from the docstrings of the skimage.data functions (the wheel's README.txt says nothing
# about licences). The rocket photo is SpaceX's, not NASA's: SpaceX released it into the public domain.
PHOTO_LICENCES = {
    "astronaut": "Public domain (NASA; skimage.data.astronaut: 'No known copyright restrictions, released into the public domain')",
    "chelsea": "CC0 by the photographer Stefan van der Walt (skimage.data.chelsea)",
    "coffee": "CC0 by the photographer Rachel Michetti, courtesy of Pikolo Espresso Bar (skimage.data.coffee)",
    "rocket": "Public domain (SpaceX; skimage.data.rocket)",
}

# Text at 28 px or more: RapidOCR's detector misses or garbles smaller glyphs once the page is
# scaled to its 960 px limit.
TITLE_SIZE = 36
TEXT_SIZE = 30
SMALL_SIZE = 28

BAR_COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
INK = "#111111"
GRID = "#888888"


# ---------------------------------------------------------------------------------------------
# fonts and small drawing helpers
# ---------------------------------------------------------------------------------------------

_FONT_CACHE: dict[int, ImageFont.FreeTypeFont] = {}


def font(size: int) -> ImageFont.FreeTypeFont:
    """A scalable font of ``size`` px: Pillow's bundled font, so renders do not depend on the OS."""
    if size not in _FONT_CACHE:
        loaded = ImageFont.load_default(size=size)
        if not isinstance(loaded, ImageFont.FreeTypeFont):
            # Pillow without FreeType returns a fixed-size bitmap font that OCR cannot read.
            try:
                loaded = ImageFont.truetype("DejaVuSans.ttf", size)
            except OSError as exc:
                raise SystemExit("need Pillow >= 10.1 with FreeType, or DejaVuSans.ttf installed") from exc
        _FONT_CACHE[size] = loaded
    return _FONT_CACHE[size]


def text_size(draw: ImageDraw.ImageDraw, text: str, size: int) -> tuple[int, int]:
    """Width and height of ``text`` in the font of ``size`` px."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font(size))
    return right - left, bottom - top


def centred(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, fill: str = INK) -> None:
    """Draw ``text`` centred on ``xy`` (anchor "mm" keeps labels centred whatever their width)."""
    draw.text(xy, text, font=font(size), fill=fill, anchor="mm")


def new_canvas(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A white RGB canvas and its drawing context."""
    image = Image.new("RGB", (width, height), "white")
    return image, ImageDraw.Draw(image)


# ---------------------------------------------------------------------------------------------
# charts
# ---------------------------------------------------------------------------------------------


def bar_chart(title: str, x_label: str, y_label: str, labels: list[str], values: list[float],
              unit: str = "", width: int = 800, height: int = 600) -> Image.Image:
    """A vertical bar chart with the value printed above each bar, so the chart is readable by OCR."""
    image, draw = new_canvas(width, height)
    centred(draw, (width / 2, 34), title, TITLE_SIZE)
    left, right, top, bottom = 110, width - 30, 90, height - 110
    top_value = max(values) * 1.15  # headroom for the value labels above the tallest bar
    # Axes and a few light grid lines so the chart looks like a chart, not only boxes.
    for step in range(5):
        y = bottom - (bottom - top) * step / 4
        draw.line([(left, y), (right, y)], fill="#DDDDDD", width=1)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=INK, width=3)
    slot = (right - left) / len(labels)
    bar_width = slot * 0.6
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x0 = left + slot * i + (slot - bar_width) / 2
        y0 = bottom - (bottom - top) * value / top_value
        draw.rectangle([x0, y0, x0 + bar_width, bottom], fill=BAR_COLOURS[i % len(BAR_COLOURS)], outline=INK)
        centred(draw, (x0 + bar_width / 2, y0 - 20), f"{format_number(value)}{unit}", SMALL_SIZE)
        centred(draw, (x0 + bar_width / 2, bottom + 26), label, TEXT_SIZE)
    centred(draw, ((left + right) / 2, height - 40), x_label, TEXT_SIZE)
    # The y-axis label is drawn on its own image and rotated, as charting libraries do.
    label_w, label_h = text_size(draw, y_label, TEXT_SIZE)
    rotated = Image.new("RGB", (label_w + 10, label_h + 16), "white")
    ImageDraw.Draw(rotated).text((5, 4), y_label, font=font(TEXT_SIZE), fill=INK)
    rotated = rotated.rotate(90, expand=True)
    image.paste(rotated, (30, int((top + bottom) / 2 - rotated.height / 2)))
    return image


def line_chart(title: str, x_label: str, y_label: str, labels: list[str], values: list[float],
               width: int = 800, height: int = 600) -> Image.Image:
    """A line chart with a labelled marker on every point."""
    image, draw = new_canvas(width, height)
    centred(draw, (width / 2, 34), title, TITLE_SIZE)
    left, right, top, bottom = 110, width - 50, 100, height - 110
    low, high = 0.0, max(values) * 1.2
    for step in range(5):
        y = bottom - (bottom - top) * step / 4
        draw.line([(left, y), (right, y)], fill="#DDDDDD", width=1)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=INK, width=3)
    slot = (right - left) / len(labels)
    points = [(left + slot * (i + 0.5), bottom - (bottom - top) * (v - low) / (high - low)) for i, v in enumerate(values)]
    draw.line(points, fill=BAR_COLOURS[0], width=4)
    for i, ((x, y), axis_label, value) in enumerate(zip(points, labels, values, strict=True)):
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], fill=BAR_COLOURS[3], outline=INK)
        # Label below a dip, above anything else: above a dip the two segments run into the digits
        # and OCR drops them (it read "19" at the 2020 minimum as "9", or not at all).
        dip = 0 < i < len(values) - 1 and value < values[i - 1] and value < values[i + 1]
        centred(draw, (x, y + 32 if dip else y - 30), format_number(value), SMALL_SIZE)
        centred(draw, (x, bottom + 26), axis_label, TEXT_SIZE)
    centred(draw, ((left + right) / 2, height - 40), x_label, TEXT_SIZE)
    label_w, label_h = text_size(draw, y_label, TEXT_SIZE)
    rotated = Image.new("RGB", (label_w + 10, label_h + 16), "white")
    ImageDraw.Draw(rotated).text((5, 4), y_label, font=font(TEXT_SIZE), fill=INK)
    rotated = rotated.rotate(90, expand=True)
    image.paste(rotated, (30, int((top + bottom) / 2 - rotated.height / 2)))
    return image


def format_number(value: float) -> str:
    """Integers without a decimal point, anything else with two decimals."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


# ---------------------------------------------------------------------------------------------
# documents
# ---------------------------------------------------------------------------------------------


def document(title: str, lines: list[tuple[str, str]], width: int = 640, rule_before: tuple[int, ...] = ()) -> Image.Image:
    """A white page with a centred title and ``(left, right)`` text lines; the right part is right-aligned.

    ``rule_before`` lists line indices above which a horizontal rule is drawn (e.g. above a total),
    as on a real receipt.
    """
    line_height = 46
    height = 120 + line_height * len(lines) + 40
    image, draw = new_canvas(width, height)
    draw.rectangle([6, 6, width - 7, height - 7], outline="#BBBBBB", width=2)  # page edge
    centred(draw, (width / 2, 55), title, TITLE_SIZE)
    y = 120
    for index, (left_text, right_text) in enumerate(lines):
        if index in rule_before:
            draw.line([(40, y - 6), (width - 40, y - 6)], fill=INK, width=2)
        draw.text((40, y), left_text, font=font(TEXT_SIZE), fill=INK)
        if right_text:
            draw.text((width - 40, y), right_text, font=font(TEXT_SIZE), fill=INK, anchor="ra")
        y += line_height
    return image


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[str]], column_widths: list[int]) -> Image.Image:
    """A TabMWP-style table: title above, grid lines, shaded header row, centred cells."""
    row_height = 58
    margin = 30
    width = sum(column_widths) + 2 * margin
    height = 90 + row_height * (len(rows) + 1) + margin
    image, draw = new_canvas(width, height)
    centred(draw, (width / 2, 45), title, TITLE_SIZE)
    top = 90
    draw.rectangle([margin, top, width - margin, top + row_height], fill="#E8EEF7")
    for r, row in enumerate([header, *rows]):
        x = margin
        y = top + r * row_height
        for c, cell in enumerate(row):
            centred(draw, (x + column_widths[c] / 2, y + row_height / 2), cell, TEXT_SIZE)
            x += column_widths[c]
    # Grid lines over the cells.
    bottom = top + row_height * (len(rows) + 1)
    for r in range(len(rows) + 2):
        draw.line([(margin, top + r * row_height), (width - margin, top + r * row_height)], fill=GRID, width=2)
    x = margin
    for w in [0, *column_widths]:
        x += w
        draw.line([(x, top), (x, bottom)], fill=GRID, width=2)
    return image


# ---------------------------------------------------------------------------------------------
# photos
# ---------------------------------------------------------------------------------------------


def photo(name: str, max_side: int = 512) -> Image.Image:
    """A photo from the scikit-image wheel (bundled, so no download), shrunk to ``max_side``."""
    from skimage import data  # imported here: only this helper needs scikit-image

    image = Image.fromarray(np.asarray(getattr(data, name)()))
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image.convert("RGB")


# ---------------------------------------------------------------------------------------------
# the samples
# ---------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One QA pair plus what ``--check`` must find in the image (not written to samples.jsonl)."""

    id: str
    subset: str
    task_type: str
    question: str
    answers: list[str]
    image: str
    licence: str
    tags: list[str]
    choices: list[str] | None = None
    constraint: str | None = None
    ocr_expect: list[str] = field(default_factory=list)  # strings OCR must read back
    faces: int | None = None  # number of frontal faces the Haar detector must find

    def row(self) -> dict[str, object]:
        """The samples.jsonl row, keys in the documented order."""
        return {
            "id": self.id, "subset": self.subset, "task_type": self.task_type, "question": self.question,
            "answers": self.answers, "choices": self.choices, "constraint": self.constraint,
            "image": self.image, "licence": self.licence, "tags": self.tags,
        }


def build_images() -> dict[str, Callable[[], Image.Image]]:
    """File name -> renderer of every image in the sample."""
    return {
        # charts
        "chart_monthly_sales.png": lambda: bar_chart(
            "Monthly Sales 2023", "Month", "Sales (units)",
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun"], [120, 95, 140, 185, 160, 130]),
        "chart_product_units.png": lambda: bar_chart(
            "Units Sold by Product", "Product", "Units",
            ["A", "B", "C", "D", "E"], [35, 58, 42, 27, 61]),
        "chart_visitors_line.png": lambda: line_chart(
            "Museum Visitors per Year", "Year", "Visitors (thousands)",
            ["2018", "2019", "2020", "2021", "2022", "2023"], [48, 52, 19, 31, 44, 57]),
        "chart_city_rainfall.png": lambda: bar_chart(
            "Rainfall in May", "City", "Rainfall (mm)",
            ["Oslo", "Rome", "Lima", "Cairo"], [73, 48, 15, 10], width=720),
        "chart_fruit_sales.png": lambda: bar_chart(
            "Fruit Sold on Saturday", "Fruit", "Units sold",
            ["Apple", "Banana", "Cherry", "Mango"], [64, 88, 23, 47], width=720),
        # documents
        "doc_receipt.png": lambda: document("GREEN LEAF CAFE", [
            ("12 Harbour Road", ""),
            ("Cappuccino", "$4.50"),
            ("Bagel with cheese", "$6.25"),
            ("Orange juice", "$3.80"),
            ("Fruit salad", "$5.90"),
            ("Subtotal", "$20.45"),
            ("Tax", "$3.00"),
            ("TOTAL", "$23.45"),
            ("Thank you!", ""),
        ], rule_before=(1, 5, 7)),
        "doc_invoice.png": lambda: document("INVOICE", [
            ("Invoice No:", "INV-20417"),
            ("Date:", "2024-03-08"),
            ("Bill to:", "Northwind Ltd"),
            ("Web design", "$1,200.00"),
            ("Hosting (1 year)", "$180.00"),
            ("Amount due", "$1,380.00"),
        ], width=660, rule_before=(3, 5)),
        "doc_form.png": lambda: document("MEMBERSHIP FORM", [
            ("Name:", "Maria Lopez"),
            ("Date of birth:", "1990-07-21"),
            ("City:", "Lisbon"),
            ("Phone:", "555-0142"),
            ("Plan:", "Family"),
            ("Signed:", "M. Lopez"),
        ], width=620),
        "doc_notice.png": lambda: document("MEETING NOTICE", [
            ("To: All staff", ""),
            ("Topic: Budget review", ""),
            ("Date: 14 March 2024", ""),
            ("Time: 9:30 AM", ""),
            # "Location: Room 305" rather than "Room: 305": RapidOCR reads a bare "Room:" as "Ro0m:".
            ("Location: Room 305", ""),
            ("Please bring your reports.", ""),
        ], width=620),
        # tables
        "table_school_prices.png": lambda: table(
            "School supplies", ["Item", "Price"],
            [["notebook", "$3.25"], ["pen", "$1.10"], ["backpack", "$18.50"], ["ruler", "$0.85"]],
            [260, 200]),
        "table_books_read.png": lambda: table(
            "Books read this summer", ["Name", "Books"],
            [["Ann", "12"], ["Ben", "9"], ["Chloe", "15"], ["David", "7"]],
            [240, 200]),
        "table_train_schedule.png": lambda: table(
            "Train schedule", ["Station", "Arrival"],
            [["Oak Avenue", "9:15"], ["Pine Square", "10:05"], ["Maple Street", "10:45"], ["River Park", "11:30"]],
            [300, 200]),
        "table_pizza_orders.png": lambda: table(
            "Pizza orders", ["Day", "Orders"],
            [["Monday", "34"], ["Tuesday", "41"], ["Wednesday", "29"], ["Thursday", "38"]],
            [280, 200]),
        # photos
        "photo_astronaut.jpg": lambda: photo("astronaut"),
        "photo_chelsea.jpg": lambda: photo("chelsea"),
        "photo_coffee.jpg": lambda: photo("coffee"),
        "photo_rocket.jpg": lambda: photo("rocket"),
    }


def build_samples() -> list[Sample]:
    """Every QA pair. Answers come from the literals in ``build_images``; variants are accepted forms."""
    r = RENDERED_LICENCE
    samples = [
        # --- charts -------------------------------------------------------------------------
        Sample("chart-001", "chart", "chart", "Which month has the highest sales?", ["April", "Apr"],
               "images/chart_monthly_sales.png", r, ["bar_chart", "argmax"], constraint="word_or_phrase",
               ocr_expect=["Apr", "185", "160", "140"]),
        Sample("chart-002", "chart", "chart", "What is the value for C?", ["42"],
               "images/chart_product_units.png", r, ["bar_chart", "lookup"], constraint="word_or_phrase",
               ocr_expect=["C", "42"]),
        Sample("chart-003", "chart", "chart", "In which year did the museum have the fewest visitors?", ["2020"],
               "images/chart_visitors_line.png", r, ["line_chart", "argmin"], constraint="word_or_phrase",
               ocr_expect=["2020", "19", "31"]),
        Sample("chart-004", "chart", "chart", "How many millimetres of rain fell in Oslo in May?", ["73", "73 mm"],
               "images/chart_city_rainfall.png", r, ["bar_chart", "lookup"], constraint="short",
               ocr_expect=["Oslo", "73", "48"]),
        Sample("chart-005", "chart", "multiple_choice", "Which fruit sold the fewest units on Saturday?",
               ["C", "Cherry"], "images/chart_fruit_sales.png", r, ["bar_chart", "argmin", "multiple_choice"],
               choices=["Apple", "Banana", "Cherry", "Mango"], constraint="option_letter",
               ocr_expect=["Cherry", "23", "47", "64"]),
        # --- documents ----------------------------------------------------------------------
        Sample("document-001", "document", "docvqa", "What is the total amount on the receipt?", ["$23.45", "23.45"],
               "images/doc_receipt.png", r, ["receipt"], constraint="short",
               ocr_expect=["TOTAL", "23.45"]),
        Sample("document-002", "document", "docvqa", "What is the invoice number?", ["INV-20417", "20417"],
               "images/doc_invoice.png", r, ["invoice"], constraint="short",
               ocr_expect=["INV-20417"]),
        Sample("document-003", "document", "docvqa", "Which city is written on the membership form?", ["Lisbon"],
               "images/doc_form.png", r, ["form"], constraint="word_or_phrase",
               ocr_expect=["City", "Lisbon"]),
        Sample("document-004", "document", "docvqa", "In which room is the meeting held?", ["305", "Room 305"],
               "images/doc_notice.png", r, ["notice"], constraint="short",
               ocr_expect=["Room 305"]),
        # --- knowledge (answers need a fact not in the image; corpus.jsonl states it) ---------
        Sample("knowledge-001", "knowledge", "knowledge",
               "The model behind the astronaut in this photo is of the Space Shuttle. Which space agency operated the Space Shuttle?",
               ["NASA", "National Aeronautics and Space Administration"], "images/photo_astronaut.jpg",
               PHOTO_LICENCES["astronaut"], ["space", "outside_knowledge"], constraint="word_or_phrase"),
        Sample("knowledge-002", "knowledge", "knowledge",
               "This photo shows a Falcon 9 rocket on its launch pad. Which company builds the Falcon 9?",
               ["SpaceX", "Space Exploration Technologies", "Space Exploration Technologies Corp."],
               "images/photo_rocket.jpg", PHOTO_LICENCES["rocket"], ["space", "outside_knowledge"],
               constraint="word_or_phrase"),
        Sample("knowledge-003", "knowledge", "knowledge",
               "What is the scientific name of the species of the animal shown in the image?",
               ["Felis catus", "Felis silvestris catus"], "images/photo_chelsea.jpg", PHOTO_LICENCES["chelsea"],
               ["animals", "outside_knowledge"], constraint="word_or_phrase"),
        # --- photos ---------------------------------------------------------------------------
        Sample("photo-001", "photo", "vqa", "How many people are in the image?", ["1", "one"],
               "images/photo_astronaut.jpg", PHOTO_LICENCES["astronaut"], ["counting", "people"],
               constraint="word_or_phrase", faces=1),
        Sample("photo-002", "photo", "vqa", "What animal is shown?", ["cat", "a cat", "tabby cat"],
               "images/photo_chelsea.jpg", PHOTO_LICENCES["chelsea"], ["animals"], constraint="word_or_phrase",
               faces=0),
        Sample("photo-003", "photo", "vqa", "What drink is in the cup?", ["coffee", "espresso"],
               "images/photo_coffee.jpg", PHOTO_LICENCES["coffee"], ["food_drink"], constraint="word_or_phrase",
               faces=0),
        Sample("photo-004", "photo", "vqa", "What kind of vehicle is standing on the launch pad?",
               ["rocket", "a rocket", "Falcon 9"], "images/photo_rocket.jpg", PHOTO_LICENCES["rocket"],
               ["space", "vehicles"], constraint="word_or_phrase"),
        # --- tables (TabMWP style) ------------------------------------------------------------
        Sample("table-001", "table", "math", "How much more does a backpack cost than a notebook?",
               ["$15.25", "15.25"], "images/table_school_prices.png", r, ["tabmwp", "subtraction", "money"],
               constraint="short", ocr_expect=["backpack", "18.50", "notebook", "3.25"]),
        Sample("table-002", "table", "math", "How many books did Ann and Chloe read in all?", ["27"],
               "images/table_books_read.png", r, ["tabmwp", "addition"], constraint="short",
               ocr_expect=["Ann", "12", "Chloe", "15"]),
        Sample("table-003", "table", "table", "At what time does the train arrive at Maple Street?", ["10:45"],
               "images/table_train_schedule.png", r, ["schedule", "lookup"], constraint="short",
               ocr_expect=["Maple Street", "10:45"]),
        Sample("table-004", "table", "multiple_choice", "On which day were the most pizzas ordered?",
               ["B", "Tuesday"], "images/table_pizza_orders.png", r, ["tabmwp", "argmax", "multiple_choice"],
               choices=["Monday", "Tuesday", "Wednesday", "Thursday"], constraint="option_letter",
               ocr_expect=["Tuesday", "41", "38", "34", "29"]),
    ]
    # Stable order: by subset, then id (ids are already subset-prefixed).
    return sorted(samples, key=lambda s: (s.subset, s.id))


CORPUS: list[dict[str, str | None]] = [
    {"title": "Space Shuttle",
     "text": "The Space Shuttle was a partly reusable spacecraft operated by NASA, the United States space "
             "agency. It flew 135 missions between 1981 and 2011.", "url": None},
    {"title": "NASA",
     "text": "NASA, the National Aeronautics and Space Administration, is the civil space agency of the United "
             "States. It was founded in 1958 and ran the Apollo and Space Shuttle programmes.", "url": None},
    {"title": "Eileen Collins",
     "text": "Eileen Collins is an American NASA astronaut. In 1995 she became the first woman to pilot the "
             "Space Shuttle, and she later commanded it.", "url": None},
    {"title": "Falcon 9",
     "text": "Falcon 9 is a two-stage rocket designed and built by the American company SpaceX. Its first "
             "stage can land again after launch and be reused.", "url": None},
    {"title": "SpaceX",
     "text": "SpaceX (Space Exploration Technologies Corp.) is a private American rocket maker founded in 2002. "
             "It builds the Falcon 9 rocket and the Dragon spacecraft.", "url": None},
    {"title": "DSCOVR",
     "text": "DSCOVR is a space weather and Earth observation satellite. It was launched on a SpaceX Falcon 9 "
             "rocket from Cape Canaveral in February 2015.", "url": None},
    {"title": "Domestic cat",
     "text": "The domestic cat, scientific name Felis catus, is a small carnivorous mammal kept as a pet. "
             "Some authors name it Felis silvestris catus, as a subspecies of the wildcat.", "url": None},
    {"title": "Tabby cat",
     "text": "A tabby is a domestic cat whose coat has stripes, swirls or spots, often with an M-shaped mark "
             "on the forehead. Tabby is a coat pattern, not a breed.", "url": None},
    {"title": "Coffee",
     "text": "Coffee is a drink brewed from the roasted seeds, called beans, of the Coffea plant. It contains "
             "caffeine and is usually served hot.", "url": None},
    {"title": "Espresso",
     "text": "Espresso is a strong coffee made by forcing hot water through finely ground coffee under "
             "pressure. It is served in a small cup and topped with a light brown foam called crema.", "url": None},
    {"title": "Rocket launch",
     "text": "A rocket launches by burning propellant and pushing hot exhaust gases out of its engines, which "
             "produces thrust. Launches from Florida often use pads at Cape Canaveral.", "url": None},
    {"title": "Bar chart",
     "text": "A bar chart shows values as bars whose lengths are proportional to the values. The tallest bar "
             "marks the largest value and the shortest the smallest.", "url": None},
]


# ---------------------------------------------------------------------------------------------
# writing and checking
# ---------------------------------------------------------------------------------------------


def write_all() -> list[Sample]:
    """Render the images and write samples.jsonl and corpus.jsonl; return the samples."""
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    renderers = build_images()
    # Drop images from earlier runs that the script no longer makes, so the folder matches the script.
    for stale in IMAGE_DIR.iterdir():
        if stale.is_file() and stale.name not in renderers:
            stale.unlink()
    for name, render in renderers.items():
        image = render()
        if name.endswith(".jpg"):
            # No EXIF/timestamps; fixed quality and no optimisation pass keep the bytes stable.
            image.save(IMAGE_DIR / name, "JPEG", quality=88)
        else:
            image.save(IMAGE_DIR / name, "PNG", optimize=True)
    samples = build_samples()
    missing = {s.image for s in samples} - {f"images/{n}" for n in renderers}
    if missing:
        raise SystemExit(f"samples refer to images that are not made: {sorted(missing)}")
    ids = [s.id for s in samples]
    if len(ids) != len(set(ids)):
        raise SystemExit("duplicate sample ids")
    with (OUT_DIR / "samples.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for sample in samples:
            fh.write(json.dumps(sample.row(), ensure_ascii=False) + "\n")
    with (OUT_DIR / "corpus.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for doc in CORPUS:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return samples


def _normalise(text: str) -> str:
    """Lower case without spaces: OCR often splits or merges words ("Room:305")."""
    return "".join(text.lower().split())


def _ocr_has(items: list[str], expected: str) -> bool:
    """Whether OCR read ``expected``. Numbers must be a whole OCR item (after dropping "$" and ","),
    otherwise "19" would be found inside "2019"; words may sit inside a longer line."""
    def bare(text: str) -> str:
        return _normalise(text).replace("$", "").replace(",", "")

    if any(ch.isalpha() for ch in expected):
        return any(_normalise(expected) in _normalise(item) for item in items)
    return any(bare(expected) == bare(item) for item in items)


def check(samples: list[Sample]) -> bool:
    """OCR every rendered image and count faces on the photos; print a table; True when all pass."""
    import cv2
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(det_limit_type="max", det_limit_side_len=960)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    ocr_cache: dict[str, list[str]] = {}
    all_ok = True
    print(f"{'id':14} {'answer':12} check")
    for sample in samples:
        path = str(OUT_DIR / sample.image)
        notes: list[str] = []
        ok = True
        if sample.ocr_expect:
            if path not in ocr_cache:
                result, _ = engine(cv2.imread(path))
                ocr_cache[path] = [item[1] for item in (result or [])]
            missing = [s for s in sample.ocr_expect if not _ocr_has(ocr_cache[path], s)]
            ok = ok and not missing
            notes.append("OCR ok" if not missing else f"OCR missing {missing}")
        if sample.faces is not None:
            grey = cv2.equalizeHist(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY))
            found = len(cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24)))
            ok = ok and found == sample.faces
            notes.append(f"faces {found} (want {sample.faces})")
        if not notes:
            notes.append("not machine-checkable")
        all_ok = all_ok and ok
        print(f"{sample.id:14} {sample.answers[0]:12} {'PASS' if ok else 'FAIL'}: {'; '.join(notes)}")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the images with RapidOCR and a face detector")
    args = parser.parse_args(argv)
    samples = write_all()
    size = sum(p.stat().st_size for p in IMAGE_DIR.iterdir())
    print(f"wrote {len(samples)} samples, {len(CORPUS)} corpus documents, {size / 1024:.0f} KiB of images to {OUT_DIR}")
    if args.check:
        return 0 if check(samples) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
