"""Built-in tools: the paper's operators."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mmat_core import hookimpl

if TYPE_CHECKING:
    from mmat_core import Detector, Tool


@hookimpl
def register_tools(register: Callable[[type[Tool]], None]) -> None:
    """Register the built-in operators (imported here, so importing this module stays cheap)."""
    from mmat_plugins.tools.caption import ImageCaptionTool
    from mmat_plugins.tools.faces import FaceDetectionTool
    from mmat_plugins.tools.label_bbox import LabelBoxTool
    from mmat_plugins.tools.ocr import OCRTool

    register(ImageCaptionTool)
    register(OCRTool)
    register(FaceDetectionTool)
    register(LabelBoxTool)


@hookimpl
def register_detectors(register: Callable[[type[Detector]], None]) -> None:
    """Register the detector backends of label_bbox."""
    from mmat_plugins.tools.detectors import HttpDetector, TransformersDetector

    register(TransformersDetector)
    register(HttpDetector)
