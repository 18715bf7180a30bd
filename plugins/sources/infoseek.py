"""InfoSeek (GitHub ``open-vision-language/infoseek``): questions about the entity in an OVEN image
that need outside knowledge.

Read layout: ``infoseek_{train,val,test}.jsonl`` with ``data_id``, ``image_id`` (``oven_XXXXXXXX``),
``question``, ``answer`` (a list, canonical first), ``answer_eval`` (accepted variants; numbers as
``{"wikidata": x, "range": [lo, hi]}``) and ``data_split``. The annotations are distributed from the
project's repository (not the Hub) and the images are the OVEN snapshot (Hub ``ychenNLP/oven``,
gated): ``image_map`` names a user-built JSONL of ``{image_id, image_path}``; without it an image
is looked for as ``<image_root>/<image_id>.jpg`` (then ``.JPEG``, ``.jpeg``, ``.png``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from mmat_core.errors import ConfigError
from mmat_core.images import ImageError
from mmat_core.models import ImageRef, SourceSample
from mmat_core.authoring.sources import (
    ImageResolver,
    SourceRecord,
    RecordItem,
    RecordSource,
    SingleSetOptions,
    SubsetPlan,
    answers_field,
    text_field,
)
from mmat_plugins.sources.readers import iter_jsonl

#: InfoSeek questions in MMAT-1M (MMAT-SPEC.md, stage 1): a part of the train split.
PAPER_COUNT = 131_400
#: ``mix: paper`` draws a seeded share this much above PAPER_COUNT / rows, then caps at
#: PAPER_COUNT: the quota is filled from the whole file, not from its first lines, even after
#: curation quarantines some rows.
PAPER_DRAW_MARGIN = 1.1
_SUFFIXES = (".jpg", ".JPEG", ".jpeg", ".png")


class InfoSeekOptions(SingleSetOptions):
    """Options of the ``infoseek`` source."""

    path: str = Field(description="local folder holding infoseek_<split>.jsonl")
    split: Literal["train", "val", "test"] = "train"
    image_root: str | None = Field(None, description="folder of the OVEN images; default: path")
    image_map: str | None = Field(None, description="JSONL of {image_id, image_path} (paths relative to image_root)")


class InfoSeekSource(RecordSource):
    """InfoSeek, one sample per question; every accepted variant kept as an answer."""

    name = "infoseek"
    version = "1"
    description = "InfoSeek (open-vision-language/infoseek): knowledge questions over OVEN entity images"
    licence = "Apache-2.0 (InfoSeek repository; no separate data licence found; OVEN images keep their terms)"
    Options = InfoSeekOptions
    paper_mix: ClassVar[dict[str, int]] = {"infoseek": PAPER_COUNT}

    def validate(self) -> None:
        """The annotation file (and the image map, when named) must exist."""
        opts = self.options
        self.file = Path(opts.path).expanduser() / f"infoseek_{opts.split}.jsonl"
        if not self.file.is_file():
            raise ConfigError(f"{self.file} not found; download the InfoSeek annotations (open-vision-language/infoseek) "
                              "and set path to their folder", key="path")
        self.map_file: Path | None = None
        if opts.image_map:
            self.map_file = Path(opts.image_map).expanduser()
            if not self.map_file.is_file():
                raise ConfigError(f"{self.map_file} not found", key="image_map")
        self.images = ImageResolver(Path(opts.image_root or opts.path).expanduser(), check=opts.check_images,
                                    cache_size=opts.image_cache)
        self._paths: dict[str, str] | None = None

    def curation_plan(self) -> dict[str | None, SubsetPlan]:
        """``mix: paper``: at most :data:`PAPER_COUNT` questions, drawn (seeded) from the whole
        file; ``quota`` and ``ratio`` override either part."""
        plan = super().curation_plan()
        opts = self.options
        if opts.mix == "paper" and opts.ratio is None:
            quota = plan[None].quota or PAPER_COUNT
            rows = count_lines(self.file)
            share = min(1.0, PAPER_DRAW_MARGIN * quota / rows) if rows else 1.0
            plan[None] = SubsetPlan(quota=quota, ratio=share if share < 1.0 else None)
        return plan

    def image_paths(self) -> dict[str, str]:
        """image_id -> relative path from the map file (read once, on first use: ids and paths only)."""
        if self._paths is None:
            self._paths = {}
            if self.map_file is not None:
                for _, row in iter_jsonl(self.map_file):
                    if isinstance(row, dict) and isinstance(row.get("image_id"), str) and isinstance(row.get("image_path"), str):
                        self._paths[row["image_id"]] = row["image_path"]
        return self._paths

    def iter_records(self) -> Iterator[RecordItem]:
        """Rows of the split's annotation file."""
        for ref, record in iter_jsonl(self.file):
            yield ref, None, record

    def image_for(self, image_id: str) -> ImageRef:
        """The image of an OVEN id, through the map or by file name."""
        if self.map_file is not None:
            relative = self.image_paths().get(image_id)
            if relative is None:
                raise ImageError("image_missing", f"{image_id} is not in {self.map_file.name}")
            return self.images.from_path(relative)
        last: ImageError | None = None
        for suffix in _SUFFIXES:
            try:
                return self.images.from_path(image_id + suffix)
            except ImageError as exc:
                if exc.reason != "image_missing":
                    raise
                last = exc
        raise last or ImageError("image_missing", image_id)

    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample]:
        """The question, the answers (canonical first, then accepted variants) and the image."""
        data_id = text_field(record, "data_id")
        image_id = text_field(record, "image_id")
        answers = answers_field(record.get("answer"), "answer")
        evaluation: Any = record.get("answer_eval")
        if isinstance(evaluation, list):
            for variant in evaluation:
                if isinstance(variant, str) and variant.strip() and variant not in answers:
                    answers.append(variant.strip())
        image = self.image_for(image_id or "")
        return [self.sample(subset=None, row=f"{self.options.split}/{data_id}", turn=0, question=record.get("question"),
                            answers=answers, images=[image], task_type="knowledge",
                            meta={"image_id": image_id, "answer_eval": evaluation, "data_split": record.get("data_split")})]


def count_lines(path: Path) -> int:
    """Lines of a file (a last line without a newline counts), read 1 MiB at a time (the train file is a few hundred MB)."""
    lines = 0
    last = b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")
