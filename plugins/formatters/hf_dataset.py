"""A Hugging Face dataset: parquet shards with declared ``datasets`` features, and a dataset card.

The features (``Image()`` columns included) are declared up front with :mod:`datasets` and rows are
encoded by them, so ``datasets.load_dataset("parquet", ...)`` (or the Hub viewer) reads the
images back as pictures. Rows are written in row groups as they arrive: memory stays flat.
The card (``README.md``) records sources, licences, models, tools, yield and cost.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from mmat_plugins.formatters.base import (
    export_images,
    image_bytes,
    view_system,
)
from pydantic import Field

from mmat_core import ExportOptions, RecordFunction, ViewFormatter, checked_record_function
from mmat_core.components import FormatContext, TraceWriter
from mmat_core.formatting import view_messages
from mmat_core.models import KEPT_STATUSES, Rejected
from mmat_core.writers import AtomicFile, SkipTrace, in_validation, is_kept, trace_id

#: Split names as the Hub spells them.
SPLITS = ("train", "validation")


class HFDatasetOptions(ExportOptions):
    """Options of the Hugging Face dataset export."""

    file: str | None = Field(None, description="folder name of the dataset (default hf_dataset_<view>)")
    images: Literal["path", "embed"] = Field(
        "embed", description="embed: the image bytes go into the parquet (the dataset travels); path: Image() cells "
                             "hold this machine's absolute path (datasets opens a relative one from the current "
                             "directory, so the data only loads here)",
    )
    rows_per_group: int = Field(1000, ge=1, description="rows buffered per parquet row group")
    max_group_mb: int = Field(64, ge=1, description="embedded image MB buffered per parquet row group (a group ends at "
                                                    "whichever limit comes first; bounds memory with large images)")
    pretty_name: str | None = Field(None, description="title of the dataset card")


def features(view: str) -> Any:
    """The ``datasets`` features of the export (imported here: datasets is heavy)."""
    import datasets

    return datasets.Features({
        "id": datasets.Value("string"),
        "view": datasets.Value("string"),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "images": datasets.List(datasets.Image()),
        "answer": datasets.Value("string"),
        "source": datasets.Value("string"),
        "subset": datasets.Value("string"),
        "licence": datasets.Value("string"),
        "generator": datasets.Value("string"),
        "status": datasets.Value("string"),
    })


class _Shard:
    """One parquet file being written by ``datasets``' own ``ParquetWriter`` (hidden name until
    published); it encodes rows with the features and counts rows and bytes for the card."""

    def __init__(self, path: Path, features: Any) -> None:
        from datasets.arrow_writer import ParquetWriter

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.writer = ParquetWriter(features=features, path=str(self.tmp))
        self.count = 0
        self.num_bytes = 0
        self.pending_bytes = 0

    def write(self, row: dict[str, Any], rows_per_group: int, max_group_bytes: int) -> None:
        self.writer.write(row, writer_batch_size=rows_per_group)
        self.count += 1
        # Rows alone do not bound memory: 1,000 photos of 500 KB would be held at once. The
        # writer empties its buffer when it writes a group, which resets the byte count too.
        self.pending_bytes = 0 if not self.writer.current_examples else self.pending_bytes + sum(
            len(image.get("bytes") or b"") for image in row.get("images") or ())
        if self.pending_bytes >= max_group_bytes:
            self.writer.write_examples_on_file()
            self.pending_bytes = 0

    def commit(self) -> Path:
        _, self.num_bytes = self.writer.finalize()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.writer.finalize()
        except Exception:  # noqa: BLE001, S110 - nothing written yet, or already closed: the file goes either way
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


class _CardStats:
    """What the dataset card reports, gathered from every trace seen (kept or not)."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.by_source: dict[str, Counter[str]] = defaultdict(Counter)
        self.licences: dict[str, str] = {}
        self.generators: Counter[str] = Counter()
        self.tools: Counter[str] = Counter()
        self.rag_calls = 0
        self.cost = 0.0
        self.tokens = 0

    def add(self, data: Mapping[str, Any]) -> None:
        sample = data["sample"]
        key = sample["source"] + (f"/{sample['subset']}" if sample.get("subset") else "")
        status = data.get("status", "kept")
        self.status[status] += 1
        self.by_source[key]["kept" if is_kept(data) else status] += 1
        self.by_source[key]["total"] += 1
        if sample.get("licence"):
            self.licences[key] = sample["licence"]
        self.generators[data["provenance"].get("generator", "?")] += 1
        for step in data["steps"]:
            for call in step.get("tool_calls") or ():
                self.tools[call["name"]] += 1
            if step.get("rag"):
                self.rag_calls += 1
        usage = data.get("usage") or {}
        self.cost += float(usage.get("cost_usd") or 0.0)
        self.tokens += int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)


class HFDatasetWriter:
    """Streams records into ``data/<split>-00000-of-00001.parquet`` and writes the card last."""

    def __init__(self, formatter: HFDatasetFormatter, out_dir: Path, ctx: FormatContext) -> None:
        self.formatter = formatter
        self.ctx = ctx
        self.root = out_dir / formatter.folder_name()
        self.features = features(formatter.options.view)
        self.make = checked_record_function(formatter.record_function(ctx))
        self.ratio = formatter.val_ratio()
        self.salt = formatter.options.split_salt
        splits = SPLITS if self.ratio > 0 else SPLITS[:1]
        self.shards = {split: _Shard(self.root / "data" / f"{split}-00000-of-00001.parquet", self.features) for split in splits}
        self.stats = _CardStats()
        self.rejected: list[Rejected] = []

    def write(self, trace: Any) -> None:
        """Encode one kept trace into its split's shard."""
        from mmat_core.formatting import trace_data

        data = trace_data(trace)
        self.stats.add(data)
        if not is_kept(data):
            return
        try:
            row = self.make(data)
        except SkipTrace as skip:
            self.rejected.append(Rejected(source=data["sample"]["source"], row=trace_id(data), reason=skip.reason,
                                          detail=skip.detail, stage=f"format:{self.formatter.name}"))
            return
        if row is None:
            return
        split = "validation" if "validation" in self.shards and in_validation(row["id"], self.ratio, self.salt) else "train"
        options = self.formatter.options
        self.shards[split].write(row, options.rows_per_group, options.max_group_mb << 20)

    def close(self) -> list[Path]:
        """Publish the shards, then the card."""
        # An empty validation split is left out: datasets refuses to load a split with no data.
        for name in [n for n, shard in self.shards.items() if n != "train" and shard.count == 0]:
            self.shards.pop(name).abort()
        files = [shard.commit() for shard in self.shards.values()]
        splits = {name: (shard.count, shard.num_bytes, shard.path.stat().st_size) for name, shard in self.shards.items()}
        card = dataset_card(self.formatter, self.ctx, self.stats, splits, self.features)
        with AtomicFile(self.root / "README.md") as out:
            out.write(card)
        written = list(files)
        if "license_link" in card.split("\n---\n", 1)[0]:
            with AtomicFile(self.root / "LICENSE.md") as out:
                out.write(licence_text(self.stats))
            written.append(self.root / "LICENSE.md")
        return [*written, self.root / "README.md"]

    def abort(self) -> None:
        """Discard partial shards."""
        for shard in self.shards.values():
            shard.abort()


class HFDatasetFormatter(ViewFormatter):
    """A Hugging Face dataset folder: parquet with ``Image()`` columns and a dataset card."""

    name = "hf_dataset"
    version = "1"
    description = "Hugging Face dataset: parquet via datasets features (images by path or embedded) + README card"
    Options = HFDatasetOptions
    suffix: ClassVar[str] = ""

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        if self.options.images == "path" and self.options.image_root:
            from mmat_core.errors import ConfigError

            raise ConfigError("hf_dataset images=path with image_root would write relative paths, which datasets opens "
                              "from the current directory, not the dataset folder; use images=embed (the default) or "
                              "`mmat export --bundle DIR`", key="image_root")

    def consumer_check(self, files: list[Path]) -> tuple[Path, list[str]] | None:
        """``datasets.load_dataset`` on the folder, by its card."""
        return Path(__file__).with_name("consumer_checks.py"), ["hf_dataset", str(files[-1].parent)]

    def folder_name(self) -> str:
        """The dataset folder inside the output directory."""
        return str(self.options.file or f"hf_dataset_{self.options.view}")

    def file_name(self) -> str:
        """The dataset folder (this export writes a folder, not one file)."""
        return self.folder_name()

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """One dataset row per kept trace."""
        view = self.options.view
        system = view_system(view, ctx)
        root = self.options.image_root
        embed = self.options.images == "embed"

        def record(data: Mapping[str, Any]) -> dict[str, Any]:
            sample = data["sample"]
            paths = export_images(data, root)
            if embed:
                images = [{"bytes": image_bytes(ref, ctx, root)[0], "path": os.path.basename(path)}
                          for ref, path in zip(sample.get("images") or [], paths)]
            else:
                images = [{"bytes": None, "path": path} for path in paths]
            return {
                "id": data["id"],
                "view": view,
                "messages": view_messages(data, view, ctx.tools, ctx.rag_enabled, system=system),
                "images": images,
                "answer": data.get("final_answer") or "",
                "source": sample["source"],
                "subset": sample.get("subset"),
                "licence": sample.get("licence"),
                "generator": data["provenance"].get("generator"),
                "status": data.get("status", "kept"),
            }

        return record

    def open(self, out_dir: Path, ctx: FormatContext) -> TraceWriter:
        """Open the streaming parquet writer."""
        return HFDatasetWriter(self, out_dir, ctx)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: Licence names as sources record them -> the Hub's licence identifiers.
HUB_LICENCES = {
    "apache-2.0": "apache-2.0", "apache 2.0": "apache-2.0", "mit": "mit", "cc0-1.0": "cc0-1.0", "cc0 1.0": "cc0-1.0",
    "cc by 4.0": "cc-by-4.0", "cc-by-4.0": "cc-by-4.0", "cc by-sa 4.0": "cc-by-sa-4.0", "cc-by-sa-4.0": "cc-by-sa-4.0",
    "cc by-nc 4.0": "cc-by-nc-4.0", "cc-by-nc-4.0": "cc-by-nc-4.0", "cc by-nc-sa 4.0": "cc-by-nc-sa-4.0",
    "cc-by-nc-sa-4.0": "cc-by-nc-sa-4.0", "bsd-3-clause": "bsd-3-clause",
}


def licence_fields(licences: list[str]) -> dict[str, str]:
    """The card's licence keys: the Hub identifier when every source has the same known licence,
    else ``other`` with a ``license_name`` and a ``license_link`` to the card's licence table."""
    known = {HUB_LICENCES.get(name.strip().lower()) for name in licences}
    if len(known) == 1 and None not in known:
        return {"license": str(known.pop())}
    return {"license": "other", "license_name": "mmat-source-licences", "license_link": "LICENSE.md"}


def licence_text(stats: _CardStats) -> str:
    """LICENSE.md: the licence of every source the rows come from (the card's ``license_link``)."""
    rows = [(key, stats.licences.get(key, "not recorded")) for key in sorted(stats.by_source)]
    return ("# Licences\n\nEach row keeps its source's licence in the `licence` column; the dataset as a whole is bound "
            "by every licence below.\n\n" + _table(("source", "licence"), rows) + "\n")


def dataset_card(formatter: HFDatasetFormatter, ctx: FormatContext, stats: _CardStats,
                 splits: dict[str, tuple[int, int, int]], feature_set: Any, data_dir: str = "data") -> str:
    """The README.md of the dataset: the YAML header written by ``datasets``' and
    ``huggingface_hub``'s own card code (configs, complete ``dataset_info`` with features, split
    sizes and bytes, licence keys), then provenance in tables. ``splits`` maps a split to
    (rows, Arrow bytes, parquet file bytes)."""
    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    opts = formatter.options
    manifest = ctx.manifest
    split_counts = {name: rows for name, (rows, _, _) in splits.items()}
    total_rows = sum(split_counts.values())
    pretty = opts.pretty_name or f"MMAT {opts.view.upper()} data"
    card_data = DatasetCardData(pretty_name=pretty, task_categories=["visual-question-answering", "image-text-to-text"],
                                tags=["mmat", "multimodal-agent-tuning", opts.view],
                                **licence_fields([stats.licences.get(k, "") for k in stats.by_source] or [""]))
    split_dict = datasets.SplitDict()
    for name, (rows, arrow_bytes, _) in splits.items():
        split_dict.add(datasets.SplitInfo(name=name, num_bytes=arrow_bytes, num_examples=rows))
    info = datasets.DatasetInfo(features=feature_set, splits=split_dict,
                                download_size=sum(size for _, _, size in splits.values()),
                                dataset_size=sum(b for _, b, _ in splits.values()))
    MetadataConfigs({"default": {"data_files": [{"split": name, "path": f"{data_dir}/{name}-*"} for name in splits]}}
                    ).to_dataset_card_data(card_data)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    finished = sum(stats.status.values())
    kept = sum(n for s, n in stats.status.items() if s in KEPT_STATUSES)
    source_rows = [
        (key, c["total"], c["kept"], f"{c['kept'] / c['total']:.1%}" if c["total"] else "-", stats.licences.get(key, "not recorded"))
        for key, c in sorted(stats.by_source.items())
    ]
    tool_rows = [(name, n) for name, n in stats.tools.most_common()] + ([("rag (retrieval)", stats.rag_calls)] if stats.rag_calls else [])
    enabled = ", ".join(t.name for t in ctx.tools) or "none"
    parts = [
        f"# {pretty}",
        (f"{'Multi-turn Rationale-and-Reflection (RR)' if opts.view == 'rr' else 'One-turn (ORR)'} training dialogues "
         f"written by mmat, the MMAT-1M data engine. {total_rows} rows ({', '.join(f'{s}: {n}' for s, n in split_counts.items())}); "
         f"images are {'embedded in the parquet' if opts.images == 'embed' else 'referenced by path'}."),
        ("## Sources and licences\nEach row keeps its source's licence in the `licence` column; the dataset as a whole "
         "is bound by every licence below.\n\n" + _table(("source", "finished", "kept", "yield", "licence"), source_rows)),
        "## Models\n" + _table(("generator (backend:model)", "samples"), stats.generators.most_common()),
        f"## Tools\nEnabled operators: {enabled}; retrieval {'on' if ctx.rag_enabled else 'off'}.\n\n"
        + _table(("operator", "calls"), tool_rows or [("none", 0)]),
        "## Yield and cost\n" + _table(("measure", "value"), [
            ("samples finished", finished),
            ("kept (kept + reflected + flagged)", kept),
            *[(f"status {s}", n) for s, n in sorted(stats.status.items())],
            ("rows exported", total_rows),
            ("rejected at the source", manifest.counts.get("rejected", "not recorded") if manifest is not None else "not recorded"),
            ("tokens", stats.tokens),
            ("cost (USD)", f"{stats.cost:.4f}"),
            ("cost per kept sample (USD)", f"{stats.cost / kept:.6f}" if kept else "-"),
        ]),
    ]
    if manifest is not None:
        parts.append("## Run\n" + _table(("field", "value"), [
            ("run id", manifest.run_id), ("mmat version", manifest.mmat_version),
            ("config hash", manifest.config_hash), ("finished at", manifest.finished_at or ""),
        ]))
    return str(DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(parts) + "\n"))
