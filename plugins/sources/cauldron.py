"""The Cauldron (Hub ``HuggingFaceM4/the_cauldron``): 50 vision-language sets in one layout.

Read layout: one config per sub-dataset, ``train`` split, parquet shards
``<config>/train-000NN-of-000MM-*.parquet`` with two columns: ``images`` (a list of images with
their bytes embedded) and ``texts`` (a list of ``{user, assistant, source}``, one per turn). Read
through ``datasets`` in streaming mode with image decoding off: each image's bytes are hashed,
checked and written once to the run's image store (``image_store``, set by the pipeline), and
dropped. Multiple-choice turns (``Choices:`` followed by ``A. ..`` lines) are answered
``Answer: B``; the letter becomes the answer and the options the sample's choices (an answer
given as an option's text stays that text). Later turns of a row carry the earlier ones as
context (``later_turns``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from mmat_core.errors import ConfigError
from mmat_core.models import Rejected, SourceSample
from mmat_core.authoring.sources import (
    ImageResolver,
    QuotaOptions,
    SourceRecord,
    RecordItem,
    RecordSource,
    row_key,
    strip_answer_prefix,
    strip_instruction,
)
from mmat_plugins.sources.readers import RowError, iter_datasets, looks_local

HUB_ID = "HuggingFaceM4/the_cauldron"
SUBSETS = (
    "ai2d", "aokvqa", "chart2text", "chartqa", "clevr", "clevr_math", "cocoqa", "datikz", "diagram_image_to_text",
    "docvqa", "dvqa", "figureqa", "finqa", "geomverse", "hateful_memes", "hitab", "iam", "iconqa", "infographic_vqa",
    "intergps", "localized_narratives", "mapqa", "mimic_cgd", "multihiertt", "nlvr2", "ocrvqa", "okvqa", "plotqa",
    "raven", "rendered_text", "robut_sqa", "robut_wikisql", "robut_wtq", "scienceqa", "screen2words", "spot_the_diff",
    "st_vqa", "tabmwp", "tallyqa", "tat_qa", "textcaps", "textvqa", "tqa", "vistext", "visual7w", "visualmrc", "vqarad",
    "vqav2", "vsr", "websight",
)
PAPER_MIX = {"hateful_memes": 8_500, "screen2words": 15_700, "st_vqa": 17_200, "vistext": 10_000,
             "robut_wikisql": 75_000, "robut_wtq": 38_200, "iconqa": 27_300, "raven": 20_900, "intergps": 1_300,
             "tqa": 1_500}
TASK_TYPES = {
    "chartqa": "chart", "dvqa": "chart", "figureqa": "chart", "plotqa": "chart", "mapqa": "chart", "vistext": "chart",
    "chart2text": "chart", "docvqa": "docvqa", "visualmrc": "docvqa", "infographic_vqa": "infographic",
    "st_vqa": "ocr", "textvqa": "ocr", "ocrvqa": "ocr", "textcaps": "ocr", "rendered_text": "ocr", "iam": "ocr",
    "robut_wikisql": "table", "robut_wtq": "table", "robut_sqa": "table", "hitab": "table", "tat_qa": "table",
    "multihiertt": "table", "finqa": "table", "tabmwp": "math", "intergps": "math", "geomverse": "math",
    "clevr_math": "math", "raven": "multiple_choice", "okvqa": "knowledge", "aokvqa": "knowledge",
}


class CauldronOptions(QuotaOptions):
    """Options of the ``cauldron`` source."""

    path: str = Field(HUB_ID, description="Hub id, or a local copy holding <config>/train-*.parquet")


class CauldronSource(RecordSource):
    """The Cauldron: one sample per turn of ``texts``; images from the embedded bytes."""

    name = "cauldron"
    version = "1"
    description = "The Cauldron (HuggingFaceM4/the_cauldron): 50 sub-datasets as parquet with embedded images"
    licence = "per sub-dataset: the original dataset's licence (see the_cauldron card); prompts CC-BY-4.0"
    subsets = SUBSETS
    paper_mix: ClassVar[dict[str, int]] = PAPER_MIX
    Options = CauldronOptions

    def validate(self) -> None:
        """A local copy must hold a folder of shards for every selected sub-dataset."""
        opts = self.options
        if looks_local(opts.path):
            root = Path(opts.path).expanduser()
            missing = [s for s in self.selected if not any((root / s).glob("train-*.parquet"))]
            if missing:
                present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
                raise ConfigError(f"no train-*.parquet shards for {', '.join(missing)} under {root} "
                                  f"(found: {', '.join(present) or 'nothing'})", key="path")
        self.images = ImageResolver(None, check=opts.check_images, cache_size=0)

    def iter_records(self) -> Iterator[RecordItem]:
        """Rows of each selected config's train shards, in order."""
        opts = self.options
        for subset in self.selected:
            if looks_local(opts.path):
                shards = sorted(str(p) for p in (Path(opts.path).expanduser() / subset).glob("train-*.parquet"))
                rows = iter_datasets(subset, builder="parquet", data_files=shards)
            else:
                rows = iter_datasets(opts.path, name=subset)
            for ref, record in rows:
                yield f"{subset}[{row_key(ref)}]", subset, record

    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample | Rejected]:
        """One sample per turn, sharing the row's images; later turns as ``later_turns`` says."""
        texts = record.get("texts")
        if not isinstance(texts, list) or not texts:
            raise RowError("missing_field" if not texts else "field_type", "texts")
        raw_images = record.get("images") or []
        if not isinstance(raw_images, list):
            raise RowError("field_type", "images must be a list")
        if not raw_images:
            raise RowError("no_image", "the row embeds no image")
        images = [self.images.from_bytes(item, self.image_store) for item in raw_images]
        row = row_key(ref)

        def turns() -> Iterator[tuple[str, str]]:
            for turn, text in enumerate(texts):
                if not isinstance(text, dict):
                    raise RowError("field_type", f"texts[{turn}] is not an object")
                question, reply = text.get("user"), text.get("assistant")
                if not isinstance(reply, str):
                    raise RowError("missing_field" if reply is None else "field_type", f"texts[{turn}].assistant")
                if not isinstance(question, str):
                    raise RowError("missing_field" if question is None else "field_type", f"texts[{turn}].user")
                yield strip_instruction(question.strip()), strip_answer_prefix(reply)

        return self.dialogue_samples(ref, subset, row, turns(), images=images,
                                     task_type=TASK_TYPES.get(subset or "", "vqa"),
                                     tags=["math"] if TASK_TYPES.get(subset or "") == "math" else None)
