"""Visual CoT (Hub ``deepcs233/Visual-CoT``): 12 sub-datasets of questions with the box of the
region that answers them.

Read layout: ``metadata/<set>_cot_train.jsonl``, one row a line with ``question``, ``answer``,
``image`` (a file name within its set), ``width``, ``height``, ``bboxs`` ([x1, y1, x2, y2] in
pixels), ``dataset`` and ``split``. Images are the unpacked tar parts, under ``cot/<set>/``;
TextCap rows take their images from ``cot/textvqa``. The metadata files are chosen over the
LLaVA-layout ``viscot_363k.json`` because they name the sub-dataset by file, so selecting one reads
only that file, and they carry the box in pixels with the image size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from mmat_core.errors import ConfigError
from mmat_core.models import SourceSample
from mmat_core.authoring.sources import ImageResolver, QuotaOptions, SourceRecord, RecordItem, RecordSource, text_field
from mmat_plugins.sources.readers import RowError, iter_datasets, iter_jsonl, looks_local

HUB_ID = "deepcs233/Visual-CoT"
SUBSETS = ("cub", "docvqa", "dude", "flickr30k", "gqa", "infographicsvqa", "openimages", "sroie",
           "textcap", "textvqa", "visual7w", "vsr")
#: Dialogues per sub-dataset in MMAT-1M (MMAT-SPEC.md, stage 1).
PAPER_MIX = {"cub": 10_100, "docvqa": 33_500, "dude": 11_700, "flickr30k": 135_700, "gqa": 98_100,
             "infographicsvqa": 15_100, "openimages": 43_100, "sroie": 2_500, "textcap": 32_200,
             "textvqa": 18_500, "visual7w": 30_500, "vsr": 3_400}
TASK_TYPES = {"docvqa": "docvqa", "dude": "docvqa", "sroie": "docvqa", "infographicsvqa": "infographic",
              "textvqa": "ocr", "textcap": "ocr"}
#: Sub-datasets whose images live in another set's folder.
IMAGE_FOLDER = {"textcap": "textvqa"}


class VisualCoTOptions(QuotaOptions):
    """Options of the ``visual_cot`` source."""

    path: str = Field(HUB_ID, description="Hub id, or a local copy holding metadata/ (and cot/ with the images)")
    image_root: str | None = Field(None, description="folder holding cot/<set>/ images; default: <path>/cot")


class VisualCoTSource(RecordSource):
    """Visual CoT, one sample per metadata row."""

    name = "visual_cot"
    version = "1"
    description = "Visual CoT (deepcs233/Visual-CoT): 12 sub-datasets, questions with the answering region's box"
    licence = "Apache-2.0 (Visual CoT; research use; images keep their original datasets' terms)"
    subsets = SUBSETS
    paper_mix: ClassVar[dict[str, int]] = PAPER_MIX
    Options = VisualCoTOptions

    def validate(self) -> None:
        """A Hub read still needs the images on disk: the tar parts cannot be streamed row by row."""
        opts = self.options
        local = looks_local(opts.path)
        if local and not (Path(opts.path).expanduser() / "metadata").is_dir():
            raise ConfigError(f"{opts.path} has no metadata/ folder; point path at a copy of {HUB_ID}", key="path")
        if not local and opts.image_root is None:
            raise ConfigError(f"reading {opts.path} from the Hub needs the unpacked images: set image_root "
                              "to the folder holding cot/<set>/", key="image_root")
        root = Path(opts.image_root).expanduser() if opts.image_root else Path(opts.path).expanduser() / "cot"
        self.images = ImageResolver(root, check=opts.check_images, cache_size=opts.image_cache)

    def iter_records(self) -> Iterator[RecordItem]:
        """Rows of each selected sub-dataset's metadata file, in sub-dataset order."""
        for subset in self.selected:
            file_name = f"metadata/{subset}_cot_train.jsonl"
            if looks_local(self.options.path):
                path = Path(self.options.path).expanduser() / file_name
                if not path.exists():
                    yield file_name, subset, RowError("file_missing", f"{file_name} is not in the local copy")
                    continue
                for ref, record in iter_jsonl(path):
                    yield ref, subset, record
            else:
                for ref, record in iter_datasets("json", builder="json", data_files=f"hf://datasets/{self.options.path}/{file_name}"):
                    yield ref, subset, record

    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample]:
        """One sample: the question, the answer, the image and its box."""
        assert subset is not None
        folder = IMAGE_FOLDER.get(subset, subset)
        image_name = text_field(record, "image")
        image = self.images.from_path(f"{folder}/{image_name}")
        boxes = record.get("bboxs")
        row = ref.rsplit(":", 1)[-1]
        return [self.sample(subset=subset, row=row, turn=0, question=record.get("question"), answers=record.get("answer"),
                            images=[image], task_type=TASK_TYPES.get(subset, "vqa"),
                            meta={"bboxes": boxes} if isinstance(boxes, list) else None)]

