"""The ``face_detection`` operator: OpenCV Haar cascades (they ship inside the opencv wheel)."""

from __future__ import annotations

import threading
from typing import Any, Literal

from mmat_plugins.tools.base import ToolOptions
from pydantic import Field

from mmat_core.components import ComponentOptions, Tool, ToolContext, ToolOutput

_NUMBERS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def describe_faces(boxes: list[list[int]]) -> str:
    """The released data's sentence form: ``There is one face with a coordinate: [x1, y1, x2, y2]``."""
    if not boxes:
        return "There is no face in the image."
    if len(boxes) == 1:
        return f"There is one face with a coordinate: {boxes[0]}"
    count = _NUMBERS[len(boxes)] if len(boxes) < len(_NUMBERS) else str(len(boxes))
    return f"There are {count} faces with coordinates: " + ", ".join(str(b) for b in boxes)


CASCADES = ("frontalface_default", "frontalface_alt", "frontalface_alt2", "frontalface_alt_tree")


class FaceOptions(ToolOptions):
    """Options of the face detector."""

    cascade: Literal[CASCADES] = Field(  # type: ignore[valid-type]
        "frontalface_default", description="which of OpenCV's bundled frontal-face Haar cascades to use")
    scale_factor: float = Field(1.1, gt=1.0)
    min_neighbors: int = Field(5, ge=1)
    min_size: int = Field(24, ge=8, description="smallest face side in pixels")
    max_side: int = Field(1024, ge=64, description="images are downscaled to this longest side first")


class FaceDetectionTool(Tool):
    """Finds faces and reports their pixel boxes."""

    name = "face_detection"
    version = "2"
    label = "face detection"
    description = "detect human faces and give their pixel coordinates"
    Options = FaceOptions

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._local = threading.local()  # CascadeClassifier is not thread-safe: one per thread

    def _cascade(self) -> Any:
        import cv2

        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}haarcascade_{self.options.cascade}.xml")
            if cascade.empty():
                raise RuntimeError(f"OpenCV has no Haar cascade {self.options.cascade!r}; install opencv-python-headless<5")
            self._local.cascade = cascade
        return cascade

    def detect(self, data: bytes) -> list[list[int]]:
        """Face boxes [x1, y1, x2, y2] in the original image's pixels, left to right."""
        import cv2
        import numpy as np

        gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise ValueError("the image could not be decoded")
        scale = min(1.0, self.options.max_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale) if scale < 1.0 else gray
        found = self._cascade().detectMultiScale(
            cv2.equalizeHist(small),
            scaleFactor=self.options.scale_factor,
            minNeighbors=self.options.min_neighbors,
            minSize=(self.options.min_size, self.options.min_size),
        )
        boxes = [[round(x / scale), round(y / scale), round((x + w) / scale), round((y + h) / scale)] for x, y, w, h in found]
        return sorted(boxes)

    def prepare(self) -> None:
        """Import OpenCV in the engine's thread (its first import is not thread-safe)."""
        import cv2  # noqa: F401

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Detect faces in the sample's image."""
        if ctx.image is None:
            return ToolOutput(text="There is no image to look at.")
        boxes = await ctx.blocking(self.detect, ctx.images.load(ctx.image))
        return ToolOutput(text=describe_faces(boxes), data={"boxes": boxes})
