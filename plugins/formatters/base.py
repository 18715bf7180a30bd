"""What the built-in formatters share: options, the train/val split, image paths and tags.

Every built-in formatter computes its record from a trace's JSON dict (``accepts_dicts``), so the
bulk re-export can feed it the run store's rows without pydantic validation; given a
:class:`~mmat_core.models.Trace` it dumps it first and produces the same bytes.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from abc import abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from mmat_core.components import ComponentOptions, FormatContext, Formatter, TraceWriter
from mmat_core.errors import ConfigError
from mmat_core.formatting import ForgedTagError, check_trace_text, trace_data
from mmat_core.models import Trace
from mmat_core.writers import RecordWriter, SkipTrace, SplitWriter, write_json_atomic

RecordFunction = Callable[[Mapping[str, Any]], "dict[str, Any] | None"]

#: Split ratio used by ``naming: paper`` when ``val_ratio`` is not given.
PAPER_VAL_RATIO = 0.01


class ViewOptions(ComponentOptions):
    """Options every built-in formatter takes."""

    file: str | None = Field(None, description="output file name (default: the formatter's own)")
    val_ratio: float | None = Field(
        None, ge=0, lt=1,
        description="share of samples written to a validation file, chosen by a hash of the sample id "
                    "(0 or unset: one file, except naming=paper which defaults to 0.01)",
    )
    split_salt: str = Field("mmat-split-1", description="changes which samples fall into validation")


class ExportOptions(ViewOptions):
    """Options of the exports for training frameworks."""

    view: Literal["rr", "orr"] = Field("rr", description="which dialogue to export: multi-turn RR or one-turn ORR")
    image_root: str | None = Field(
        None, description="write image paths relative to this folder (the framework's image folder); "
                          "paths outside it stay absolute",
    )


class FinishingWriter:
    """Wraps a writer; after the data files are published, writes side files (metadata, cards)."""

    def __init__(self, inner: Any, finish: Callable[[list[Path], Any], list[Path]]) -> None:
        self.inner = inner
        self.finish = finish

    @property
    def rejected(self) -> list[Any]:
        """Traces the inner writer left out."""
        return self.inner.rejected

    def write(self, trace: Any) -> None:
        """Pass one trace on."""
        self.inner.write(trace)

    def close(self) -> list[Path]:
        """Publish the data files, then the side files."""
        files = self.inner.close()
        return files + self.finish(files, self.inner)

    def abort(self) -> None:
        """Discard partial output."""
        self.inner.abort()


class ViewFormatter(Formatter):
    """Base of the built-in formatters: one JSON record per kept trace, built from its dict."""

    #: The export driver may hand :meth:`open`'s writer stored JSON dicts instead of Traces.
    accepts_dicts: ClassVar[bool] = True
    Options = ViewOptions
    #: Output is plain lines with no side files, so a parallel export may join part files.
    parallel_safe: ClassVar[bool] = False
    #: The writer class (JSON Lines by default; LLaVA streams one JSON array).
    writer_class: ClassVar[type[RecordWriter]] = RecordWriter

    @abstractmethod
    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """A function from a trace's JSON dict to its record; run-level text is computed once here."""

    def record(self, trace: Trace | Mapping[str, Any], ctx: FormatContext) -> dict[str, Any] | None:
        """The record of one trace (for programmatic use and tests); :class:`SkipTrace` when it
        cannot be written."""
        return checked(self.record_function(ctx))(trace_data(trace))

    def val_ratio(self) -> float:
        """The effective validation share."""
        ratio = self.options.val_ratio
        return float(ratio) if ratio is not None else 0.0

    def file_name(self) -> str:
        """The output file name when there is no split."""
        return str(self.options.file or self.default_file or f"{self.name}.jsonl")

    def split_file_names(self) -> tuple[str, str]:
        """(train, val) file names when the data is split."""
        stem, dot, suffix = self.file_name().rpartition(".")
        if not dot:
            stem, suffix = suffix, "jsonl"
        return f"{stem}_train.{suffix}", f"{stem}_val.{suffix}"

    def open(self, out_dir: Path, ctx: FormatContext) -> TraceWriter:
        """Open a streaming, atomic writer (two of them, train and val, when splitting)."""
        function = checked(self.record_function(ctx))

        def make(trace: Any) -> dict[str, Any] | None:
            return function(trace if not isinstance(trace, Trace) else trace_data(trace))

        ratio = self.val_ratio()
        if ratio > 0 or self.always_split():
            train, val = self.split_file_names()
            writer: Any = SplitWriter(self.writer_class(out_dir / train, make, formatter=self.name),
                                      self.writer_class(out_dir / val, make, formatter=self.name),
                                      ratio, self.options.split_salt)
        else:
            writer = self.writer_class(out_dir / self.file_name(), make, formatter=self.name)
        return self.wrap(writer, out_dir, ctx)

    def always_split(self) -> bool:
        """Whether train and val files are written even at ratio 0 (paper naming)."""
        return False

    def wrap(self, writer: Any, out_dir: Path, ctx: FormatContext) -> TraceWriter:
        """Add side files to a writer (subclasses override); the default adds none."""
        return writer


def checked(function: RecordFunction) -> RecordFunction:
    """``function`` behind the format's last line of defence: a trace whose text would forge an
    RR/ORR tag is left out (``forged_tag``, quarantined by the writer) instead of written."""

    def record(data: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            check_trace_text(data)
        except ForgedTagError as exc:
            raise SkipTrace("forged_tag", str(exc)) from None
        return function(data)

    return record


# ---- helpers shared by the exports ------------------------------------------------------------


def relative_image_path(path: str, image_root: str | None) -> str:
    """``path`` relative to ``image_root`` when it lies inside it, else unchanged."""
    if not image_root:
        return path
    root = os.path.abspath(image_root)
    absolute = os.path.abspath(path)
    if absolute == root or not absolute.startswith(root.rstrip(os.sep) + os.sep):
        return path
    return os.path.relpath(absolute, root)


def export_images(data: Mapping[str, Any], image_root: str | None) -> list[str]:
    """The sample's image paths as an export writes them."""
    return [relative_image_path(image.get("path") or image["sha256"], image_root)
            for image in data["sample"].get("images") or ()]


def tag_first_user(messages: list[dict[str, str]], prefix: str) -> list[dict[str, str]]:
    """Messages with ``prefix`` (image tags) put before the first user turn's text."""
    if not prefix:
        return messages
    tagged = list(messages)
    for i, message in enumerate(tagged):
        if message["role"] == "user":
            tagged[i] = {"role": "user", "content": prefix + message["content"]}
            break
    return tagged


def image_bytes(image: Mapping[str, Any], ctx: FormatContext, image_root: str | None = None) -> tuple[bytes, str]:
    """The bytes and MIME type of one image of a trace, or :class:`SkipTrace` with the reason.

    Looks at the recorded path (relative paths against ``image_root`` or the context's image root),
    then at the run's content-addressed blob folder. A recorded hash is checked.
    """
    from mmat_core.images import ImageError, read_regular_file, sha256_bytes

    path = image.get("path")
    sha = image.get("sha256") or ""
    candidates: list[Path] = []
    if path:
        candidates.append(Path(path))
        for root in (image_root, ctx.image_root):
            if root and not os.path.isabs(path):
                candidates.append(Path(root) / path)
    run_dir = ctx.run_info.get("run_dir")
    if sha and run_dir:
        candidates.extend(sorted((Path(run_dir) / "images" / sha[:2]).glob(f"{sha}*")))
    for candidate in candidates:
        if candidate.is_file():
            try:  # the one safe reader: regular files only, size-capped (see read_regular_file)
                data = read_regular_file(candidate)
            except ImageError as exc:
                raise SkipTrace(exc.reason, exc.detail) from None
            if sha and sha256_bytes(data) != sha:
                raise SkipTrace("image_changed", f"{candidate} no longer matches its recorded hash")
            mime = _mime(image.get("format"), candidate.name)
            return data, mime
    raise SkipTrace("image_missing", f"{path or sha}: not found (set image_root or keep the run's images folder)")


def _mime(pil_format: str | None, name: str) -> str:
    if pil_format:
        return f"image/{pil_format.lower().replace('jpg', 'jpeg')}"
    guess, _ = mimetypes.guess_type(name)
    return guess or "application/octet-stream"


def data_url(data: bytes, mime: str) -> str:
    """A ``data:`` URL holding the bytes in base64."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def merge_json_entry(path: Path, key: str, entry: dict[str, Any]) -> Path:
    """Add or replace ``key`` in the JSON object at ``path`` (created if absent), atomically."""
    import json

    document: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"not valid JSON ({exc}); fix or remove it before exporting", file=str(path)) from None
        if isinstance(loaded, dict):
            document = loaded
    document[key] = entry
    return write_json_atomic(path, document)


def ensure(condition: bool, reason: str, detail: str) -> None:
    """Leave the trace out with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise SkipTrace(reason, detail)


def view_system(view: str, ctx: FormatContext) -> str:
    """The system prompt of a view for this run (an imported run may carry its RR prompt verbatim)."""
    from mmat_core import prompts

    if view == "rr":
        return str(ctx.run_info.get("rr_system") or prompts.rr_system(ctx.tools, ctx.rag_enabled))
    return prompts.orr_system()
