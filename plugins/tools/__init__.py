"""Built-in tools: the paper's operators."""

from __future__ import annotations

from collections.abc import Callable

from mmat_plugins.tools.caption import ImageCaptionTool
from mmat_plugins.tools.detectors import HttpDetector, TransformersDetector
from mmat_plugins.tools.faces import FaceDetectionTool
from mmat_plugins.tools.label_bbox import LabelBoxTool
from mmat_plugins.tools.ocr import OCRTool

from mmat_core import Detector, Tool, hookimpl


@hookimpl
def register_tools(register: Callable[[type[Tool]], None]) -> None:
    """Register the built-in operators."""
    register(ImageCaptionTool)
    register(OCRTool)
    register(FaceDetectionTool)
    register(LabelBoxTool)


@hookimpl
def register_detectors(register: Callable[[type[Detector]], None]) -> None:
    """Register the detector backends of label_bbox."""
    register(TransformersDetector)
    register(HttpDetector)
