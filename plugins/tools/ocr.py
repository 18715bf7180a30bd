"""The ``ocr`` operator: PP-OCR models through rapidocr (the models ship inside the wheel).

rapidocr's defaults upscale small images so their short side reaches 736 pixels, which costs about
a second a call. ``det_limit_type="max"`` caps the longest side instead, so a small image is read
at its own size (60-160 ms here). Each worker thread gets its own engine: onnxruntime sessions may
be shared, but rapidocr's Python wrapper is not documented as thread-safe.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from mmat_plugins.tools.base import ToolOptions
from pydantic import Field

from mmat_core.components import ComponentOptions, Tool, ToolContext, ToolOutput


class OCROptions(ToolOptions):
    """Options of the OCR operator."""

    max_side: int = Field(960, ge=64, description="longest side the text detector sees; smaller is faster")
    min_score: float = Field(0.5, ge=0, le=1, description="drop text lines recognised with less confidence")
    use_angle_classifier: bool = Field(False, description="run the 180-degree text-direction classifier (slower)")
    threads: int | None = Field(None, ge=1, description="onnxruntime threads per call; default: onnxruntime's choice")
    row_tolerance: int = Field(12, ge=1, description="pixels of vertical offset still read as the same text line")


def load_onnxruntime_quietly() -> None:
    """Import onnxruntime with its telemetry off: ORT_DISABLE_TELEMETRY must be in the
    environment before the native library loads (its events are sent from native threads that no
    Python-level guard sees), and ``disable_telemetry_events()`` covers a process where it was
    loaded earlier. Checked at the system-call level by tests/scale/test_network.py."""
    from mmat_core.telemetry import silence_telemetry

    silence_telemetry()
    import onnxruntime

    onnxruntime.disable_telemetry_events()


def reading_order(lines: list[dict[str, Any]], tolerance: int) -> list[dict[str, Any]]:
    """Sort recognised lines top to bottom, then left to right; lines whose tops differ by less
    than ``tolerance`` pixels count as one row."""
    ordered = sorted(lines, key=lambda line: line["box"][1])
    rows: list[list[dict[str, Any]]] = []
    for line in ordered:
        if rows and abs(line["box"][1] - rows[-1][0]["box"][1]) < tolerance:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda item: item["box"][0])]


class OCRTool(Tool):
    """Recognises the text in the image, in reading order."""

    name = "ocr"
    version = "2"
    label = "ocr"
    description = "recognise the text written in the image (documents, charts, signs, tables)"
    Options = OCROptions
    timeout_s: ClassVar[float] = 60.0

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._local = threading.local()

    def engine(self) -> Any:
        """This thread's rapidocr engine, created on first use (onnxruntime is imported only here)."""
        engine = getattr(self._local, "engine", None)
        if engine is None:
            load_onnxruntime_quietly()
            from rapidocr_onnxruntime import RapidOCR

            threads = self.options.threads or -1
            engine = RapidOCR(
                det_limit_type="max",
                det_limit_side_len=self.options.max_side,
                use_cls=self.options.use_angle_classifier,
                text_score=self.options.min_score,
                intra_op_num_threads=threads,
            )
            self._local.engine = engine
        return engine

    def recognise(self, data: bytes) -> tuple[str, list[dict[str, Any]]]:
        """Text of an image in reading order, and its lines with their pixel boxes and scores."""
        import cv2
        import numpy as np

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("the image could not be decoded")
        result, _ = self.engine()(image, use_cls=self.options.use_angle_classifier)
        lines = []
        for box, text, score in result or []:
            if float(score) < self.options.min_score or not str(text).strip():
                continue
            xs = [p[0] for p in box]
            ys = [p[1] for p in box]
            lines.append({"text": str(text).strip(), "score": round(float(score), 3),
                          "box": [round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))]})
        lines = reading_order(lines, self.options.row_tolerance)
        return " ".join(line["text"] for line in lines), lines

    def prepare(self) -> None:
        """Import OpenCV and rapidocr in the engine's thread, not in a race between workers."""
        import cv2  # noqa: F401

        load_onnxruntime_quietly()
        import rapidocr_onnxruntime  # noqa: F401

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """OCR the sample's image."""
        if ctx.image is None:
            return ToolOutput(text="There is no image to read.")
        data = ctx.images.load(ctx.image)
        text, lines = await ctx.blocking(self.recognise, data)
        return ToolOutput(text=text or "No text was recognised.", data={"lines": lines})
