"""The RR (multi-turn) and ORR (one-turn) formatters, exact to the released MMAT-1M layout."""

from __future__ import annotations

from typing import Any, Literal

from mmat_plugins.formatters.base import relative_image_path, view_system
from pydantic import Field

from mmat_core import PAPER_VAL_RATIO, RecordFunction, ViewFormatter, ViewOptions
from mmat_core.components import FormatContext
from mmat_core.formatting import orr_messages, rr_messages, training_record

#: The paper's released file names: (train, val) per view.
PAPER_FILE_NAMES = {
    "rr": ("dataset_qa_rr_train_all_RR_sys.jsonl", "dataset_qa_rr_val_all_RR_sys.jsonl"),
    "orr": ("dataset_qa_rr_train_all_ORR.jsonl", "dataset_qa_rr_val_all_ORR.jsonl"),
}


class JsonlOptions(ViewOptions):
    """Options of the RR and ORR formatters."""

    naming: Literal["mmat", "paper"] = Field(
        "mmat",
        description="mmat: rr.jsonl / orr.jsonl (rr_train/rr_val with a split); paper: the released names "
                    "dataset_qa_rr_{train,val}_all_RR_sys.jsonl / ..._ORR.jsonl, always split",
    )
    image_root: str | None = Field(
        None, description="write image paths relative to this folder (paths outside it stay absolute); unset: as stored",
    )


class _PaperNamed(ViewFormatter):
    """RR/ORR naming: the paper's file names on request."""

    Options = JsonlOptions
    view = "rr"
    parallel_safe = True

    def val_ratio(self) -> float:
        """``naming: paper`` splits 1% into validation unless ``val_ratio`` says otherwise."""
        if self.options.val_ratio is None and self.options.naming == "paper":
            return PAPER_VAL_RATIO
        return super().val_ratio()

    def always_split(self) -> bool:
        """The paper's layout always has a train and a val file."""
        return self.options.naming == "paper"

    consumer_note = "no trainer reads this layout as it is; `mmat validate FILE` checks its structure"

    def relative_images(self, make: RecordFunction) -> RecordFunction:
        """``make`` with its record's image paths relative to option ``image_root`` (when set)."""
        root = self.options.image_root
        if not root:
            return make

        def record(data: Any) -> Any:
            out = make(data)
            if out is not None and out.get("images"):
                out["images"] = [relative_image_path(path, root) for path in out["images"]]
            return out

        return record

    def split_file_names(self) -> tuple[str, str]:
        """The paper's names, or ``<stem>_train`` / ``<stem>_val``."""
        if self.options.naming == "paper":
            return PAPER_FILE_NAMES[self.view]
        return super().split_file_names()


class RRFormatter(_PaperNamed):
    """Multi-turn Rationale and Reflection records (``rr.jsonl``)."""

    name = "rr"
    version = "2"
    description = "multi-turn RR dialogues: <THOUGHT>/<OPERATOR>/<RAG>/<SIGNAL> steps, tool results in user turns"
    default_file = "rr.jsonl"
    view = "rr"

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """RR records; the system prompt (with the run's operator list) is built once."""
        system = view_system("rr", ctx)
        tools = ctx.tools
        return self.relative_images(lambda data: training_record(data, rr_messages(data, tools, system=system)))


class ORRFormatter(_PaperNamed):
    """One-turn records: operator outputs prepended, thoughts joined (``orr.jsonl``)."""

    name = "orr"
    version = "2"
    description = "one-turn ORR records: API outputs prepended to the question, <THOUGHT> and <ANSWER>"
    default_file = "orr.jsonl"
    view = "orr"

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """ORR records."""
        system = view_system("orr", ctx)
        return self.relative_images(lambda data: training_record(data, orr_messages(data, system=system)))
