"""The ``ocr`` operator: PP-OCR models through rapidocr (the models ship inside the wheel)."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from pydantic import Field

from mmat_core.components import ComponentOptions, Tool, ToolContext, ToolOutput


class OCROptions(ComponentOptions):
    """Options of the OCR operator."""

    max_side: int = Field(960, ge=64, description="longest side the detector sees; smaller is faster")
    min_score: float = Field(0.5, ge=0, le=1, description="drop text lines recognised with less confidence")


class OCRTool(Tool):
    """Recognises the text in the image, top to bottom."""

    name = "ocr"
    version = "1"
    label = "ocr"
    description = "recognise the text written in the image (documents, charts, signs, tables)"
    Options = OCROptions
    timeout_s: ClassVar[float] = 60.0

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._engine: Any = None
        self._lock = threading.Lock()

    def engine(self) -> Any:
        """The rapidocr engine, created on first use (onnxruntime is imported only here)."""
        with self._lock:
            if self._engine is None:
                from rapidocr_onnxruntime import RapidOCR

                # "max" caps the longest side instead of upscaling small images: 60-160 ms a call.
                self._engine = RapidOCR(det_limit_type="max", det_limit_side_len=self.options.max_side)
            return self._engine

    def recognise(self, data: bytes) -> tuple[str, list[dict[str, Any]]]:
        """Text lines of an image, in reading order, with their boxes and scores."""
        import cv2
        import numpy as np

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("the image could not be decoded")
        result, _ = self.engine()(image)
        lines = []
        for box, text, score in result or []:
            if float(score) < self.options.min_score or not str(text).strip():
                continue
            xs = [p[0] for p in box]
            ys = [p[1] for p in box]
            lines.append({"text": str(text), "score": round(float(score), 3),
                          "box": [round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))]})
        # Reading order: rows (by top edge, tolerant of small offsets), then left to right.
        lines.sort(key=lambda line: (round(line["box"][1] / 12), line["box"][0]))
        return " ".join(line["text"] for line in lines), lines

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """OCR the sample's image."""
        if ctx.image is None:
            return ToolOutput(text="There is no image to read.")
        data = ctx.images.load(ctx.image)
        text, lines = await ctx.blocking(self.recognise, data)
        return ToolOutput(text=text or "No text was recognised.", data={"lines": lines})
