"""Helpers for writing a formatter: :class:`ViewFormatter`, the base of every built-in formatter,
its options, the train/validation split and the forged-tag check.

A :class:`ViewFormatter` computes one JSON record per kept trace from the trace's JSON dict
(``accepts_dicts``), so the bulk re-export can feed it the run store's rows without pydantic
validation; given a :class:`~mmat_core.models.Trace` it dumps it first and produces the same bytes.
A subclass writes one method, :meth:`ViewFormatter.record_function`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from mmat_core.components import ComponentOptions, FormatContext, Formatter, TraceWriter
from mmat_core.formatting import ForgedTagError, check_trace_text, trace_data
from mmat_core.models import Trace
from mmat_core.writers import RecordWriter, SkipTrace, SplitWriter

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
    #: The writer class (JSON Lines by default; LLaVA streams one JSON array).
    writer_class: ClassVar[type[RecordWriter]] = RecordWriter

    @abstractmethod
    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """A function from a trace's JSON dict to its record; run-level text is computed once here."""

    def record(self, trace: Trace | Mapping[str, Any], ctx: FormatContext) -> dict[str, Any] | None:
        """The record of one trace (for programmatic use and tests); :class:`SkipTrace` when it
        cannot be written."""
        return checked_record_function(self.record_function(ctx))(trace_data(trace))

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
        function = checked_record_function(self.record_function(ctx))

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


def checked_record_function(function: RecordFunction) -> RecordFunction:
    """``function`` behind the format's last line of defence: a trace whose text would forge an
    RR/ORR tag is left out (``forged_tag``, quarantined by the writer) instead of written."""

    def record(data: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            check_trace_text(data)
        except ForgedTagError as exc:
            raise SkipTrace("forged_tag", str(exc)) from None
        return function(data)

    return record
