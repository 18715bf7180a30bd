"""The ``label_bbox`` operator: open-vocabulary detection of the scene graph's objects.

The object names come, in this order, from the call's ``objects`` argument, from the scene graph
``image_caption`` left in the sample's scratch space, or from the nouns of the question. The
output is the released data's shape: a dict of name -> list of normalised ``[x1, y1, x2, y2]``
(fractions of width and height, three decimals), best box first; a name with no box maps to [].
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from mmat_plugins.tools.base import ToolOptions
from mmat_plugins.tools.caption import SCENE_GRAPH_KEY
from mmat_plugins.tools.detectors import (
    DEFAULT_DETECTOR_MODEL,
    Detection,
    Detector,
    detection_libraries_missing,
    make_detector,
    weights_on_this_machine,
)
from pydantic import Field, field_validator

from mmat_core.components import ComponentOptions, Tool, ToolContext, ToolOutput

_WORD = re.compile(r"[a-z][a-z-]{2,}")
_STOP = frozenset(
    ["the", "a", "an", "of", "in", "on", "at", "to", "for", "from", "with", "by", "and", "or", "is", "are", "was", "were", "be", "been", "what", "which", "who", "whom", "whose", "where", "when", "why", "how", "many", "much", "does", "do", "did", "this", "that", "these", "those", "there", "here", "image", "picture", "photo", "shown", "show", "answer", "question", "color", "colour", "number", "name", "kind", "type", "letter", "word", "phrase", "option", "choices", "choice", "following", "according", "left", "right", "side", "front", "back", "top", "bottom", "it", "its", "their", "his", "her", "they", "them", "than", "then", "into", "onto", "about"]
)


def question_objects(question: str, limit: int) -> list[str]:
    """Candidate object names from a question: its content words, in order, without repeats."""
    words: list[str] = []
    for word in _WORD.findall(question.lower()):
        if word not in _STOP and word not in words:
            words.append(word)
    return words[:limit]


def normalise_boxes(detections: list[Detection], labels: list[str], size: tuple[int, int],
                    per_label: int) -> dict[str, list[list[float]]]:
    """Name -> normalised boxes (clipped to the image, best score first, at most ``per_label``)."""
    width, height = size
    out: dict[str, list[list[float]]] = {label: [] for label in labels}
    for det in sorted(detections, key=lambda d: -d.score):
        if det.label not in out or len(out[det.label]) >= per_label:
            continue
        x1, y1, x2, y2 = det.box
        box = [round(min(max(v / scale, 0.0), 1.0), 3) for v, scale in zip((x1, y1, x2, y2), (width, height) * 2)]
        if box[2] <= box[0] or box[3] <= box[1]:
            continue  # nothing of the box is left inside the image (at three decimals)
        out[det.label].append(box)
    return out


class LabelBoxOptions(ToolOptions):
    """Options of ``label_bbox``."""

    detector: str | dict[str, Any] = Field(
        "transformers",
        description="detector backend: 'transformers' (Grounding DINO tiny from the Hub unless `model` names another "
        "checkpoint or a local folder), 'http', or a detector a plugin registered (register_detectors hook), with its "
        "options, e.g. {name: transformers, model: /models/owlv2}",
    )
    max_objects: int = Field(8, ge=1, le=64, description="object names sent to the detector at most")
    boxes_per_object: int = Field(3, ge=1, le=50, description="boxes reported per name at most")

    @field_validator("detector")
    @classmethod
    def _detector_named(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, dict) and "name" not in value:
            # Options alone (--set tools.1.detector.model=PATH) are the default backend's.
            return {"name": "transformers", **value}
        return value


class LabelBoxTool(Tool):
    """Open-vocabulary detection of named objects, boxes normalised to the image size."""

    name = "label_bbox"
    version = "1"
    label = "label bbox"
    description = ("locate the objects of the scene (from image_caption's scene graph, or named in the question) "
                   "and give their normalised bounding boxes")
    args_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "objects": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 80},
                "maxItems": 64,
                "description": "names of the objects to locate",
            }
        },
        "additionalProperties": False,
    }
    #: When both are chosen in one step, image_caption runs first: its scene graph names the objects.
    runs_after: ClassVar[tuple[str, ...]] = ("image_caption",)
    Options = LabelBoxOptions
    timeout_s = 120.0

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        # Built now so a bad detector name or option fails with the configuration, before any work.
        self.detector: Detector = make_detector(self.options.detector)

    def preflight(self, key: str) -> list[str]:
        """What the detector lacks (libraries, weights it may not download), as its own check says."""
        return self.detector.preflight(f"{key}.detector")

    @classmethod
    def default_off_reason(cls, *, offline: bool) -> str | None:
        """Off without torch and transformers; off in the offline build (which promises no download)
        unless Grounding DINO tiny is already in the Hub cache. A real build downloads it on first use."""
        missing = detection_libraries_missing()
        if missing:
            return f"{' and '.join(missing)} not installed (pip install 'mmat[detect]')"
        if offline and not weights_on_this_machine(DEFAULT_DETECTOR_MODEL):
            return (f"no detector weights on this machine (fetch them once with `huggingface-cli download "
                    f"{DEFAULT_DETECTOR_MODEL}`, or give a local folder: --tools image_caption,label_bbox,ocr,"
                    f"face_detection --set tools.1.detector.model=PATH)")
        return None

    @classmethod
    def default_options(cls, *, offline: bool) -> dict[str, Any]:
        """The offline build loads the weights from the Hub cache and never asks the Hub."""
        if offline:
            return {"detector": {"name": "transformers", "model": DEFAULT_DETECTOR_MODEL, "local_files_only": True}}
        return {}

    def objects(self, args: dict[str, Any], ctx: ToolContext) -> list[str]:
        """The object names to detect for this call."""
        names = args.get("objects") or (ctx.scratch.get(SCENE_GRAPH_KEY) or {}).get("objects") \
            or question_objects(ctx.sample.question, self.options.max_objects)
        unique = list(dict.fromkeys(" ".join(str(n).split()) for n in names if str(n).strip()))
        return unique[: self.options.max_objects]

    def cache_extra(self, ctx: ToolContext) -> dict[str, Any]:
        """The names come from the scene graph, so it is part of the key; so is the detector."""
        return {"scene_objects": (ctx.scratch.get(SCENE_GRAPH_KEY) or {}).get("objects"),
                "question": ctx.sample.question, "detector": self.detector.identity()}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Detect the objects in the sample's image."""
        from PIL import Image

        if ctx.image is None:
            return ToolOutput(text="There is no image to look at.")
        labels = self.objects(args, ctx)
        if not labels:
            return ToolOutput(text="{}", data={"boxes": {}, "objects": []})
        data = ctx.images.load(ctx.image)
        with Image.open(io.BytesIO(data)) as picture:
            size = picture.size
        detections = await self.detector.detect(data, size, labels, ctx)
        return self.output(detections, labels, size)

    def output(self, detections: list[Detection], labels: list[str], size: tuple[int, int]) -> ToolOutput:
        """The observation: each name's normalised boxes, as JSON."""
        boxes = normalise_boxes(detections, labels, size, self.options.boxes_per_object)
        return ToolOutput(text=json.dumps(boxes, ensure_ascii=False), data={"boxes": boxes, "objects": labels})

    async def run_batch(self, calls: Sequence[tuple[dict[str, Any], ToolContext]]) -> list[ToolOutput | BaseException]:
        """Several calls through the detector's ``detect_batch`` (the transformers detector: one
        forward pass for the images it can batch); calls with no image or no names answer as
        :meth:`run` does without the detector."""
        from PIL import Image

        outputs: list[ToolOutput | BaseException | None] = [None] * len(calls)
        pending: list[tuple[int, bytes, tuple[int, int], list[str], ToolContext]] = []
        for index, (args, ctx) in enumerate(calls):
            try:
                if ctx.image is None:
                    outputs[index] = ToolOutput(text="There is no image to look at.")
                    continue
                labels = self.objects(args, ctx)
                if not labels:
                    outputs[index] = ToolOutput(text="{}", data={"boxes": {}, "objects": []})
                    continue
                data = ctx.images.load(ctx.image)
                with Image.open(io.BytesIO(data)) as picture:
                    pending.append((index, data, picture.size, labels, ctx))
            except Exception as exc:  # noqa: BLE001 - this call's error, as run would raise it
                outputs[index] = exc
        found = await self.detector.detect_batch([(data, size, labels, ctx) for _, data, size, labels, ctx in pending])
        for (index, _, size, labels, _), detections in zip(pending, found):
            outputs[index] = detections if isinstance(detections, BaseException) else self.output(detections, labels, size)
        return [output for output in outputs if output is not None]
