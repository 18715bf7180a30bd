"""LLaVA-CoT-100k (Hub ``Xkev/LLaVA-CoT-100k``): questions over ten public image sets with
structured GPT-4o answers.

Read layout: ``train.jsonl`` with ``id``, ``image`` (a path that starts with the source set, e.g.
``chartqa/train/png/two_col_100466.png``) and ``conversations`` ([{from: human|gpt, value}],
possibly several turns). Each gpt value is ``<SUMMARY>..</SUMMARY> <CAPTION>..</CAPTION>
<REASONING>..</REASONING> <CONCLUSION>..</CONCLUSION>``: the answer is the CONCLUSION. Rows with
no image are quarantined as ``no_image`` (the official loader skips them). Images are the joined
and unzipped ``image.zip`` parts, laid out under the paths the rows name.

The sub-dataset is read from the first folder of the image path through :data:`FOLDER_SUBSETS`;
``subset_map`` extends it for folder names not listed there, and rows whose folder maps to nothing
belong to the sub-dataset ``other``.
"""

from __future__ import annotations

import re
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
    check_names,
    dialogue_turns,
    strip_image_tokens,
    strip_instruction,
)
from mmat_plugins.sources.readers import RowError, iter_datasets, iter_jsonl, looks_local

HUB_ID = "Xkev/LLaVA-CoT-100k"
SUBSETS = ("sharegpt4v", "chartqa", "aokvqa", "ai2d", "geoqa+", "scienceqa", "docvqa", "pisc", "clevr", "clevr_math", "other")
PAPER_MIX = {"sharegpt4v": 31_300, "chartqa": 17_000, "aokvqa": 16_100, "ai2d": 11_400, "geoqa+": 11_400,
             "scienceqa": 5_600, "docvqa": 4_000, "pisc": 900, "clevr": 500, "clevr_math": 500}
#: First folder of an image path (lower-cased) -> sub-dataset.
FOLDER_SUBSETS = {
    "chartqa": "chartqa", "ai2d": "ai2d", "geoqa+": "geoqa+", "geoqa": "geoqa+", "geoqa_plus": "geoqa+",
    "sqa": "scienceqa", "scienceqa": "scienceqa", "docvqa": "docvqa", "pisc": "pisc",
    "clevr": "clevr", "clevr_v1.0": "clevr", "clevr-math": "clevr_math", "clevr_math": "clevr_math",
    "aokvqa": "aokvqa", "a-okvqa": "aokvqa", "sharegpt4v": "sharegpt4v", "sam": "sharegpt4v", "llava": "sharegpt4v",
    "wikiart": "sharegpt4v", "share_textvqa": "sharegpt4v", "web-celebrity": "sharegpt4v", "web-landmark": "sharegpt4v",
}
TASK_TYPES = {"chartqa": "chart", "docvqa": "docvqa", "geoqa+": "math", "clevr_math": "math", "ai2d": "multiple_choice",
              "scienceqa": "multiple_choice"}
_CONCLUSION = re.compile(r"<CONCLUSION>(.*?)</CONCLUSION>", re.DOTALL)


class LlavaCoTOptions(QuotaOptions):
    """Options of the ``llava_cot`` source."""

    path: str = Field(HUB_ID, description="Hub id, or a local copy holding train.jsonl")
    file: str = Field("train.jsonl", description="the annotation file inside path")
    image_root: str | None = Field(None, description="folder the image paths are relative to; default: path")
    subset_map: dict[str, str] = Field(default_factory=dict, description="extra image folder -> sub-dataset names")


class LlavaCoTSource(RecordSource):
    """LLaVA-CoT-100k, one sample per human/gpt turn pair, answer = the CONCLUSION."""

    name = "llava_cot"
    version = "1"
    description = "LLaVA-CoT-100k (Xkev/LLaVA-CoT-100k): ten image sets, structured answers; answer = CONCLUSION"
    licence = "Apache-2.0 (LLaVA-CoT card; images keep their original datasets' terms)"
    subsets = SUBSETS
    paper_mix: ClassVar[dict[str, int]] = PAPER_MIX
    Options = LlavaCoTOptions

    def validate(self) -> None:
        """Check the local copy and the folder map; set up the image resolver."""
        opts = self.options
        check_names(set(opts.subset_map.values()), SUBSETS, "llava_cot sub-dataset", "subset_map")
        self.folders = {**FOLDER_SUBSETS, **{k.lower(): v for k, v in opts.subset_map.items()}}
        local = looks_local(opts.path)
        if local and not (Path(opts.path).expanduser() / opts.file).is_file():
            raise ConfigError(f"{Path(opts.path) / opts.file} not found; point path at a copy of {HUB_ID}", key="path")
        if not local and opts.image_root is None:
            raise ConfigError(f"reading {opts.path} from the Hub needs the unzipped images: set image_root", key="image_root")
        root = Path(opts.image_root or opts.path).expanduser()
        self.images = ImageResolver(root, check=opts.check_images, cache_size=opts.image_cache)
        self.wanted = set(self.selected)

    def iter_records(self) -> Iterator[RecordItem]:
        """Rows of train.jsonl (the sub-dataset is found from each row's image)."""
        opts = self.options
        if looks_local(opts.path):
            rows = iter_jsonl(Path(opts.path).expanduser() / opts.file)
        else:
            rows = iter_datasets("json", builder="json", data_files=f"hf://datasets/{opts.path}/{opts.file}")
        for ref, record in rows:
            subset = None
            if not isinstance(record, RowError):
                image = record.get("image")
                subset = self.subset_of(image) if isinstance(image, str) else None
                if subset is not None and subset not in self.wanted:
                    continue
            yield ref, subset, record

    def subset_of(self, image_path: str) -> str:
        """The sub-dataset of an image path, by its first folder."""
        return self.folders.get(image_path.split("/", 1)[0].lower(), "other")

    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample | Rejected]:
        """One sample per human/gpt pair of the row; later pairs as ``later_turns`` says."""
        image_path = record.get("image")
        if image_path is None or image_path == "":
            raise RowError("no_image", "row has no image (skipped by the official loader too)")
        row_id = record.get("id")
        if not isinstance(row_id, (str, int)) or isinstance(row_id, bool):
            raise RowError("missing_field", "id") if row_id is None else RowError("field_type", "id must be a string")
        image = self.images.from_path(image_path)

        def turns() -> Iterator[tuple[str, str]]:
            for turn, (question, reply) in enumerate(dialogue_turns(record.get("conversations"))):
                conclusion = _CONCLUSION.search(reply)
                if conclusion is None:
                    raise RowError("answer_format", f"turn {turn}: the gpt reply has no <CONCLUSION>")
                yield strip_instruction(strip_image_tokens(question)), conclusion.group(1).strip()

        return self.dialogue_samples(ref, subset, str(row_id), turns(), images=[image],
                                     task_type=TASK_TYPES.get(subset or "", "vqa"),
                                     tags=["math"] if TASK_TYPES.get(subset or "") == "math" else None)
