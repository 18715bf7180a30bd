"""Detector backends of ``label_bbox``: ``transformers`` and ``http``, registered through the
``register_detectors`` hook like any plugin's.

``label_bbox`` picks a backend with its ``detector`` option, by the name a plugin registered:
``transformers`` (a zero-shot object detector loaded from a local path or a Hub id: Grounding DINO
by default, or OWL-ViT, OWLv2), ``http`` (a detection server), or a third party's
:class:`~mmat_core.Detector` subclass. Detectors come only from plugins, so the allow and block
lists (``--plugins``, ``-p no:NAME``) govern them as they govern every component.

Every backend answers in the same shape: :class:`~mmat_core.Detection` objects with boxes in pixels.
"""

from __future__ import annotations

import base64
import difflib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmat_core.components import Detection, Detector, DetectorOptions, ToolContext
from mmat_core.errors import ConfigError, UnknownComponentError
from mmat_core.models import DEFER_BUILD
from mmat_core.plugins import get_plugin_manager

__all__ = [
    "Detection", "Detector", "DetectorOptions", "HttpDetector", "TransformersDetector", "detector_class",
    "detector_names", "make_detector",
]

#: Where a detector's name and options are given, for error messages.
DETECTOR_KEY = "label_bbox.detector"


def detector_names() -> list[str]:
    """Detector backends the loaded plugins registered, sorted."""
    return get_plugin_manager().registry("detector").names()


def detector_class(name: str) -> type[Detector]:
    """The backend class registered as ``name``; an import path is refused with what to do instead."""
    if ":" in name:
        # A "package.module:Class" path would load code that no allow or block list governs.
        raise ConfigError(
            f"detector {name!r} is an import path, which mmat does not load: register the Detector subclass "
            "with a plugin's register_detectors hook (docs/plugins/hooks.md#register_detectors) and give its name "
            f"(available: {', '.join(detector_names())})", key=f"{DETECTOR_KEY}.name")
    try:
        cls = get_plugin_manager().get("detector", name)
    except UnknownComponentError as exc:
        raise ConfigError(str(exc), key=f"{DETECTOR_KEY}.name") from None
    return cls  # type: ignore[return-value]


def make_detector(spec: str | dict[str, Any]) -> Detector:
    """Instantiate a detector from ``"name"`` or ``{"name": ..., **options}``; errors name the key."""
    if isinstance(spec, str):
        spec = {"name": spec}
    options = dict(spec)
    name = str(options.pop("name", "transformers"))
    cls = detector_class(name)
    try:
        return cls(cls.Options(**options))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = ", ".join(sorted(cls.Options.model_fields))
        raise ConfigError(f"{err['msg']}; options of detector '{name}': {allowed}",
                          key=f"{DETECTOR_KEY}.{key}") from None


# ---- transformers ------------------------------------------------------------------------------


#: The detector ``label_bbox`` uses unless told otherwise: Grounding DINO (the open-vocabulary
#: detector family the paper's label_bbox operator stands for), its smallest published checkpoint.
DEFAULT_DETECTOR_MODEL = "IDEA-Research/grounding-dino-tiny"


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache folder, resolved from the environment the way huggingface_hub does
    (HF_HUB_CACHE, then HF_HOME/hub, then ~/.cache/huggingface/hub), without importing it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def weights_on_this_machine(model: str) -> bool:
    """Whether ``model`` (a local folder or a Hub id) can be loaded with no download: a folder that
    holds a ``config.json``, or a Hub id with a snapshot in the local Hub cache."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return (folder / "config.json").is_file()
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        return False
    snapshots = hub_cache_dir() / f"models--{model.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any((snapshot / "config.json").is_file() for snapshot in snapshots.iterdir())


def detection_libraries_missing() -> list[str]:
    """The libraries the ``transformers`` detector needs that are not installed (looked up, not imported)."""
    import importlib.util

    return [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]


class TransformersDetectorOptions(DetectorOptions):
    """Options of the ``transformers`` zero-shot detector."""

    model: str = Field(DEFAULT_DETECTOR_MODEL,
                       description="local folder or Hub id of a zero-shot detector (Grounding DINO, OWL-ViT, OWLv2); "
                       "a Hub id is downloaded on first use, as transformers does")
    text_threshold: float = Field(0.25, ge=0, le=1, description="Grounding DINO only: phrase-match threshold")
    device: str = Field("cpu", description="torch device, e.g. cpu or cuda:0")
    local_files_only: bool = Field(False, description="never reach the Hub (only the local folder or the Hub cache)")


class TransformersDetector(Detector):
    """A ``transformers`` zero-shot object detector, loaded once on first use."""

    name = "transformers"
    version = "1"
    description = "zero-shot object detector from transformers (Grounding DINO tiny by default; OWL-ViT, OWLv2)"
    Options = TransformersDetectorOptions
    options: TransformersDetectorOptions

    def __init__(self, options: DetectorOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None

    def preflight(self, key: str) -> list[str]:
        """torch and transformers not installed, or weights that are not on this machine and may
        not be downloaded (``local_files_only``, ``HF_HUB_OFFLINE``, or a local path)."""
        missing = detection_libraries_missing()
        if missing:
            return [f"the detector needs {' and '.join(missing)}: pip install 'mmat[detect]'"]
        model = self.options.model
        downloads_off = self.options.local_files_only or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        local = Path(model).expanduser().is_absolute() or model.startswith((".", "~"))
        if (downloads_off or local) and not weights_on_this_machine(model):
            why = "a local path with no config.json" if local else "downloads are off"
            return [(f"no detector weights at {model!r} ({why}): give a local folder with --set {key}.model=PATH, "
                     f"or a Hub id and allow the download (unset HF_HUB_OFFLINE, {key}.local_files_only: false)")]
        return []

    def load(self) -> tuple[Any, Any]:
        """The processor and model (torch and transformers are imported only here)."""
        with self._lock:
            if self._model is None:
                from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

                kwargs = {"local_files_only": self.options.local_files_only}
                try:
                    processor = AutoProcessor.from_pretrained(self.options.model, **kwargs)
                    model = AutoModelForZeroShotObjectDetection.from_pretrained(self.options.model, **kwargs)
                except OSError as exc:
                    raise RuntimeError(f"cannot load detector {self.options.model!r}: {exc}. Give a local folder "
                                       "in label_bbox's detector.model, or let it download (local_files_only: false, "
                                       "HF_HUB_OFFLINE unset)") from None
                self._processor, self._model = processor, model.to(self.options.device).eval()
            return self._processor, self._model

    def _grounding(self) -> bool:
        return "grounding" in str(getattr(self._model.config, "model_type", ""))

    def detect_blocking(self, image: bytes, labels: list[str]) -> list[Detection]:
        """Run the detector on one image (blocking; called in the tool worker pool)."""
        return self.detect_many_blocking([(image, labels)])[0]

    def batch_key(self, picture: Any, labels: list[str]) -> tuple[Any, ...]:
        """Calls with the same key share a forward pass with no padding, so each gets exactly the
        boxes it would get alone: OWL-ViT/OWLv2 resize every image to one size and need the same
        number of queries; Grounding DINO keeps the image's size and reads one prompt, which must
        have the same number of tokens."""
        processor, _ = self.load()
        if self._grounding():
            return (picture.size, len(processor.tokenizer(grounding_prompt(labels))["input_ids"]))
        return (len(labels),)

    def detect_many_blocking(self, calls: list[tuple[bytes, list[str]]]) -> list[list[Detection]]:
        """Run the detector on several ``(image, labels)``: one forward pass for each group of
        calls with the same :meth:`batch_key` (blocking)."""
        import io

        from PIL import Image

        self.load()
        pictures = [Image.open(io.BytesIO(image)).convert("RGB") for image, _ in calls]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, (picture, (_, labels)) in enumerate(zip(pictures, calls)):
            groups.setdefault(self.batch_key(picture, labels), []).append(index)
        results: list[list[Detection]] = [[] for _ in calls]
        for indices in groups.values():
            found = self._forward([pictures[i] for i in indices], [calls[i][1] for i in indices])
            for index, detections in zip(indices, found):
                results[index] = detections
        return results

    def _forward(self, pictures: list[Any], label_lists: list[list[str]]) -> list[list[Detection]]:
        """One forward pass over images of one batch key."""
        import torch

        processor, model = self._processor, self._model
        targets = [(picture.height, picture.width) for picture in pictures]
        with self._lock, torch.inference_mode():
            if self._grounding():
                # Grounding DINO reads one prompt of lower-case phrases, each ending with a dot.
                prompts = [grounding_prompt(labels) for labels in label_lists]
                inputs = processor(images=pictures, text=prompts, return_tensors="pt").to(self.options.device)
                outputs = model(**inputs)
                results = processor.post_process_grounded_object_detection(
                    outputs, inputs["input_ids"], threshold=self.options.threshold,
                    text_threshold=self.options.text_threshold, target_sizes=targets)
                # Newer transformers put the phrases in text_labels (reading "labels" there warns).
                names = [[_closest(str(text), labels) for text in
                          (result["text_labels"] if "text_labels" in result else result.get("labels", []))]
                         for result, labels in zip(results, label_lists)]
            else:
                inputs = processor(text=label_lists, images=pictures, return_tensors="pt").to(self.options.device)
                outputs = model(**inputs)
                results = processor.post_process_grounded_object_detection(
                    outputs, threshold=self.options.threshold, target_sizes=targets, text_labels=label_lists)
                names = [[labels[int(index)] for index in result["labels"]] for result, labels in zip(results, label_lists)]
        return [[Detection(label=name, score=float(score), box=[float(v) for v in box])
                 for name, score, box in zip(found, result["scores"].tolist(), result["boxes"].tolist()) if name]
                for found, result in zip(names, results)]

    async def detect(self, image: bytes, size: tuple[int, int], labels: list[str], ctx: ToolContext) -> list[Detection]:
        """Detect in the worker pool, off the event loop."""
        return await ctx.blocking(self.detect_blocking, image, labels)

    async def detect_batch(self, calls: Sequence[tuple[bytes, tuple[int, int], list[str], ToolContext]]
                           ) -> list[list[Detection] | BaseException]:
        """Several images in one forward pass per batch key (off the event loop); if the batch
        fails, each call is tried alone so one bad image fails only its own call."""
        if not calls:
            return []
        try:
            found = await calls[0][3].blocking(self.detect_many_blocking, [(image, labels) for image, _, labels, _ in calls])
            return list(found)
        except Exception:  # noqa: BLE001 - said per call by the single calls below
            return await super().detect_batch(calls)


def grounding_prompt(labels: list[str]) -> str:
    """Grounding DINO's prompt: the labels as lower-case phrases, each ending with a dot."""
    return " ".join(f"{label.lower()}." for label in labels)


def _closest(text: str, labels: list[str]) -> str:
    """The requested label a Grounding DINO phrase belongs to ('' when none is close)."""
    text = text.strip().lower()
    for label in labels:
        if label.lower() == text:
            return label
    for label in labels:
        if label.lower() in text or text in label.lower():
            return label
    match = difflib.get_close_matches(text, [label.lower() for label in labels], n=1, cutoff=0.6)
    return next((label for label in labels if match and label.lower() == match[0]), "")


# ---- http -------------------------------------------------------------------------------------


class HttpDetectorOptions(DetectorOptions):
    """Options of the ``http`` detection-server backend."""

    url: str = Field(description="endpoint that accepts POST {image, labels, threshold}")
    boxes: Literal["pixels", "normalised"] = Field("pixels", description="the unit of the boxes the server returns")
    api_key_env: str | None = Field(None, description="environment variable holding a bearer token")
    timeout_s: float = Field(30.0, gt=0)


class DetectionReply(BaseModel):
    """What a detection server answers."""

    model_config = ConfigDict(extra="ignore", defer_build=DEFER_BUILD)
    detections: list[Detection]


class HttpDetector(Detector):
    """Calls a detection server over HTTP.

    Request (JSON): ``{"image": "<base64 bytes>", "labels": [names], "threshold": t}``.
    Reply (JSON): ``{"detections": [{"label": name, "score": s, "box": [x1, y1, x2, y2]}]}``,
    boxes in pixels unless the option ``boxes`` says ``normalised``.
    """

    name = "http"
    version = "1"
    description = "a detection server over HTTP (POST image and labels, boxes back)"
    Options = HttpDetectorOptions
    options: HttpDetectorOptions

    def __init__(self, options: DetectorOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._client: Any = None

    async def detect(self, image: bytes, size: tuple[int, int], labels: list[str], ctx: ToolContext) -> list[Detection]:
        """POST the image and labels; validate the reply."""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.options.timeout_s)
        headers = {}
        if self.options.api_key_env:
            token = os.environ.get(self.options.api_key_env)
            if not token:
                raise RuntimeError(f"environment variable {self.options.api_key_env} (label_bbox detector.api_key_env) is not set")
            headers["Authorization"] = f"Bearer {token}"
        body = {"image": base64.b64encode(image).decode("ascii"), "labels": labels, "threshold": self.options.threshold}
        response = await self._client.post(self.options.url, json=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"detection server answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            reply = DetectionReply.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise RuntimeError(f"detection server sent an invalid reply: {str(exc)[:200]}") from None
        width, height = size
        detections = []
        for item in reply.detections:
            if item.score < self.options.threshold:
                continue
            box = item.box
            if self.options.boxes == "normalised":
                box = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
            detections.append(Detection(label=item.label, score=item.score, box=box))
        return detections

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

