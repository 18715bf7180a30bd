"""The ``sample`` source: the bundled sample of real QA pairs with images (charts, documents,
tables, photos from the scikit-image wheel, knowledge questions). ``mmat build`` uses it when no
source is configured. The data is made by ``scripts/make_sample_data.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from mmat_core import prompts
from mmat_core.components import ComponentOptions, Source
from mmat_core.images import ImageError, image_ref_from_file, resolve_within
from mmat_core.jsonl import iter_jsonl
from mmat_core.models import Rejected, SourceSample

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"


class SampleOptions(ComponentOptions):
    """Options of the sample source."""

    subsets: list[str] | None = Field(None, description="keep only these sub-datasets")
    limit: int | None = Field(None, ge=0)


class SampleSource(Source):
    """The bundled sample."""

    name = "sample"
    version = "1"
    description = "the bundled sample: ~20 real QA pairs over rendered charts, documents, tables and photos"
    licence = "CC0-1.0 (rendered by mmat) and per-image licences"
    subsets = ("chart", "document", "table", "photo", "knowledge")
    Options = SampleOptions

    def iter_rows(self) -> Iterator[SourceSample | Rejected]:
        """Yield the sample's QA pairs."""
        wanted = set(self.options.subsets) if self.options.subsets else None
        count = 0
        # The bundled file is ours: a line that is not JSON is a packaging bug, raised as such.
        for number, row in iter_jsonl(SAMPLE_DIR / "samples.jsonl", on_error="raise"):
            if wanted and row["subset"] not in wanted:
                continue
            if self.options.limit is not None and count >= self.options.limit:
                return
            try:
                image = image_ref_from_file(resolve_within(SAMPLE_DIR, row["image"]))
            except ImageError as exc:
                yield Rejected(source=self.name, subset=row.get("subset"), row=f"samples.jsonl:{number}",
                               reason=exc.reason, detail=exc.detail)
                continue
            constraint = row.get("constraint")
            question = row["question"]
            if row.get("choices"):
                question += "\n" + "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(row["choices"]))
            count += 1
            yield SourceSample(
                id=f"sample/{row['id']}",
                source=self.name,
                subset=row["subset"],
                question=question,
                answers=row["answers"],
                choices=row.get("choices"),
                constraint=f"\n{prompts.RESPONSE_CONSTRAINTS[constraint]}" if constraint else "",
                task_type=row["task_type"],
                images=[image],
                licence=row.get("licence") or self.licence,
                tags=row.get("tags", []),
            )
