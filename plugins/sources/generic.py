"""Generic sources for the user's own data: a JSON/JSONL file with a field mapping, the LLaVA
conversation format, the ShareGPT format, an image folder with a metadata file, and any dataset
``datasets`` can stream, with a field mapping.

The field mapping (``fields``) names, for each part of a sample, the key of the record that holds
it; a dotted key (``meta.question``) reaches into nested objects. Unknown mapping keys are refused
when the config is read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmat_core.errors import ConfigError
from mmat_core.models import DEFER_BUILD, ImageRef, SourceSample
from mmat_core.authoring.sources import (
    ImageResolver,
    SourceRecord,
    RecordItem,
    RecordSource,
    SourceOptions,
    dialogue_turns,
    local_root,
    option_answers,
    parse_choices,
    strip_image_tokens,
    strip_instruction,
)
from mmat_plugins.sources.readers import RowError, iter_datasets, iter_json_items, iter_jsonl, looks_local


class FieldMap(BaseModel):
    """Which record key holds each part of a sample (dotted keys reach into nested objects)."""

    model_config = ConfigDict(extra="forbid", defer_build=DEFER_BUILD)
    id: str | None = Field("id", description="row id; None: the line number")
    question: str = "question"
    answer: str = Field("answer", description="the answer: a string, or a list of accepted answers")
    choices: str | None = Field("choices", description="list of options of a multiple-choice question")
    image: str | None = Field("image", description="image path (relative to image_root), a list of them, or embedded bytes")
    subset: str | None = Field(None, description="sub-dataset name, per row")
    task_type: str | None = Field(None, description="task type, per row")


def lookup(record: SourceRecord, key: str | None) -> Any:
    """The value at ``key`` (dotted for nested objects); None when absent."""
    if key is None:
        return None
    if "." not in key:
        return record.get(key)
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class MappedOptions(SourceOptions):
    """Options shared by the sources that map fields."""

    fields: FieldMap = Field(default_factory=FieldMap, description="record key of each sample part")
    image_root: str | None = Field(None, description="folder image paths are relative to; default: the data file's folder")
    subset: str | None = Field(None, description="sub-dataset name given to every row (when fields.subset is unset)")
    task_type: str = Field("vqa", description="task type given to every row (when fields.task_type is unset)")
    require_image: bool = Field(True, description="quarantine rows without an image")


class MappedSource(RecordSource):
    """Turns flat records into samples through a field mapping."""

    def resolver(self, default_root: Path | None) -> ImageResolver:
        """The image resolver for ``image_root`` (or ``default_root``)."""
        opts = self.options
        root = Path(opts.image_root).expanduser() if opts.image_root else default_root
        return ImageResolver(root, check=opts.check_images, cache_size=opts.image_cache)

    def images_of(self, value: Any) -> list[ImageRef]:
        """Image references from a path, a list of paths, or embedded bytes."""
        if value is None or value == "" or value == []:
            if self.options.require_image:
                raise RowError("no_image", f"no value at {self.options.fields.image}")
            return []
        items = value if isinstance(value, list) else [value]
        refs = []
        for item in items:
            if isinstance(item, dict) and item.get("bytes") is None and isinstance(item.get("path"), str):
                item = item["path"]  # a datasets Image() cell pointing at a file
            if isinstance(item, (bytes, bytearray, dict)):
                refs.append(self.images.from_bytes(item, self.image_store))
            else:
                refs.append(self.images.from_path(item))
        return refs

    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample]:
        """One sample from one record through the field mapping."""
        fields = self.options.fields
        row_id = lookup(record, fields.id)
        if row_id is None or isinstance(row_id, (dict, list, bool)):
            row_id = ref.rsplit(":", 1)[-1].rsplit("[", 1)[-1].rstrip("]")
        subset = lookup(record, fields.subset) if fields.subset else self.options.subset
        if subset is not None and not isinstance(subset, str):
            raise RowError("field_type", f"{fields.subset} must be a string")
        question = lookup(record, fields.question)
        answer = lookup(record, fields.answer)
        choices = lookup(record, fields.choices)
        if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
            raise RowError("field_type", f"{fields.choices} must be a list of strings")
        if isinstance(question, str) and choices is None:
            question = strip_instruction(question)
            choices = parse_choices(question)
        answers: Any = answer
        picked = None
        by_letter = False
        if choices and isinstance(answer, str):
            picked = option_answers(answer, choices)
            if picked:
                answers, by_letter = picked
            if picked and isinstance(question, str) and "\nA." not in question and "\n(A)" not in question:
                question = question.strip() + "\n" + "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
        task = lookup(record, fields.task_type) if fields.task_type else None
        task = task if isinstance(task, str) else ("multiple_choice" if picked else self.options.task_type)
        images = self.images_of(lookup(record, fields.image))
        return [self.sample(subset=subset, row=str(row_id), turn=0, question=question, answers=answers, images=images,
                            task_type=task, choices=choices if picked else None, answer_key=fields.answer,
                            letter_constraint=by_letter)]


def _file_records(path: Path) -> Iterator[tuple[str, Any]]:
    """JSONL line by line, or the items of one big JSON array/object, by file suffix."""
    if path.suffix.lower() == ".json":
        for ref, value in iter_json_items(path):
            if not isinstance(value, (dict, RowError)):
                value = RowError("not_an_object", f"expected a JSON object, got {type(value).__name__}")
            yield ref, value
    else:
        yield from iter_jsonl(path)


# ---- jsonl -----------------------------------------------------------------------------------


class JsonlOptions(MappedOptions):
    """Options of the ``jsonl`` source."""

    path: str = Field(description="a .jsonl file (one object a line) or a .json file (one array or object)")


class JsonlSource(MappedSource):
    """A local JSON Lines (or JSON) file with a configurable field mapping."""

    name = "jsonl"
    version = "1"
    description = "a local JSONL/JSON file of QA rows, mapped with `fields`"
    licence = None
    Options = JsonlOptions

    def validate(self) -> None:
        """The file must exist."""
        self.file = local_root(self.options.path, "give a local .jsonl or .json file")
        if not self.file.is_file():
            raise ConfigError(f"{self.file} is a folder; give a .jsonl or .json file", key="path")
        self.images = self.resolver(self.file.parent)

    def iter_records(self) -> Iterator[RecordItem]:
        """The file's rows."""
        for ref, record in _file_records(self.file):
            yield ref, self.options.subset, record


# ---- image folder ----------------------------------------------------------------------------


class ImageFolderOptions(MappedOptions):
    """Options of the ``imagefolder`` source (the ``datasets`` imagefolder convention)."""

    path: str = Field(description="folder holding the images and metadata.jsonl (or metadata.csv)")
    metadata: str | None = Field(None, description="metadata file name; default: metadata.jsonl, else metadata.csv")
    fields: FieldMap = Field(default_factory=lambda: FieldMap(image="file_name", id=None),
                             description="record key of each sample part; the image is `file_name`")


class ImageFolderSource(MappedSource):
    """A folder of images with a metadata file naming each image's question and answer."""

    name = "imagefolder"
    version = "1"
    description = "a folder of images with metadata.jsonl/metadata.csv (file_name, question, answer, ...)"
    Options = ImageFolderOptions

    def validate(self) -> None:
        """The folder and its metadata file must exist."""
        root = local_root(self.options.path, "give a folder of images with a metadata file")
        names = [self.options.metadata] if self.options.metadata else ["metadata.jsonl", "metadata.csv"]
        found = [root / n for n in names if (root / n).is_file()]
        if not found:
            raise ConfigError(f"no {' or '.join(names)} in {root}", key="metadata" if self.options.metadata else "path")
        self.file = found[0]
        self.images = self.resolver(root)

    def iter_records(self) -> Iterator[RecordItem]:
        """Rows of the metadata file."""
        if self.file.suffix.lower() == ".csv":
            yield from self._csv_rows()
        else:
            for ref, record in _file_records(self.file):
                yield ref, self.options.subset, record

    def _csv_rows(self) -> Iterator[RecordItem]:
        with self.file.open("rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
            for number, row in enumerate(csv.DictReader(text), 2):
                ref = f"{self.file.name}:{number}"
                if any("\udc80" <= ch <= "\udcff" for value in row.values() if isinstance(value, str) for ch in value):
                    yield ref, self.options.subset, RowError("invalid_utf8", "the row holds bytes that are not UTF-8")
                    continue
                yield ref, self.options.subset, {k: v for k, v in row.items() if k is not None}


# ---- any datasets dataset --------------------------------------------------------------------


class DatasetsOptions(MappedOptions):
    """Options of the ``hf`` source."""

    path: str = Field(description="a Hub dataset id, or a builder name (json, parquet, csv) used with data_files")
    name: str | None = Field(None, description="the dataset config (sub-dataset) name")
    split: str = "train"
    data_files: str | list[str] | None = Field(None, description="local files for a builder such as parquet or json")


class DatasetsSource(MappedSource):
    """Any dataset ``datasets`` can stream, mapped with ``fields``. Image columns may hold file
    paths (relative to ``image_root``) or ``Image()`` cells, whose bytes go to the run's image store."""

    name = "hf"
    version = "1"
    description = "any `datasets` dataset (Hub id or local files through a builder), mapped with `fields`"
    Options = DatasetsOptions

    def validate(self) -> None:
        """Set up the image resolver (paths relative to image_root)."""
        opts = self.options
        if opts.data_files is not None:
            files = [opts.data_files] if isinstance(opts.data_files, str) else opts.data_files
            missing = [f for f in files if looks_local(f) and not any(c in f for c in "*?[") and not Path(f).exists()]
            if missing:
                raise ConfigError(f"data files not found: {', '.join(missing)}", key="data_files")
        self.images = self.resolver(Path(opts.image_root).expanduser() if opts.image_root else None)

    def iter_records(self) -> Iterator[RecordItem]:
        """Rows streamed by ``datasets``."""
        opts = self.options
        if opts.data_files is not None:
            rows = iter_datasets(opts.path, builder=opts.path, data_files=opts.data_files, split=opts.split)
        else:
            rows = iter_datasets(opts.path, name=opts.name, split=opts.split)
        for ref, record in rows:
            yield ref, opts.subset or opts.name, record


# ---- conversation formats --------------------------------------------------------------------


class DialogueOptions(SourceOptions):
    """Options shared by the conversation formats."""

    path: str = Field(description="a .json (one array) or .jsonl file of conversations")
    image_root: str | None = Field(None, description="folder image paths are relative to; default: the file's folder")
    subset: str | None = Field(None, description="sub-dataset name given to every row")
    task_type: str = "vqa"
    id_key: str = Field("id", description="key of the row id (the row number when absent)")


class DialogueSource(RecordSource):
    """One sample per user/assistant pair of a conversation row."""

    #: Keys that hold the conversation, tried in order.
    conversation_keys: tuple[str, ...] = ("conversations",)
    image_keys: tuple[str, ...] = ("image",)

    def validate(self) -> None:
        """The file must exist."""
        self.file = local_root(self.options.path, "give a local .json or .jsonl file")
        root = Path(self.options.image_root).expanduser() if self.options.image_root else self.file.parent
        self.images = ImageResolver(root, check=self.options.check_images, cache_size=self.options.image_cache)

    def iter_records(self) -> Iterator[RecordItem]:
        """The file's rows."""
        for ref, record in _file_records(self.file):
            yield ref, self.options.subset, record

    def turns(self, record: SourceRecord) -> list[tuple[str, str]]:
        """The (question, answer) pairs of a row."""
        for key in self.conversation_keys:
            if key in record:
                turns = record[key]
                if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
                    return dialogue_turns(turns, role_key="role", content_key="content")
                return dialogue_turns(turns)
        raise RowError("missing_field", " or ".join(self.conversation_keys))

    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample]:
        """One sample per pair, all sharing the row's images."""
        row_id = record.get(self.options.id_key)
        if row_id is None or isinstance(row_id, (dict, list, bool)):
            row_id = ref.rsplit(":", 1)[-1].rsplit("#", 1)[-1]
        value = next((record[k] for k in self.image_keys if k in record), None)
        if value is None or value == [] or value == "":
            raise RowError("no_image", f"row has no {' or '.join(self.image_keys)}")
        paths = value if isinstance(value, list) else [value]
        images = [self.images.from_path(p) for p in paths]
        turns = ((strip_instruction(strip_image_tokens(question)), answer) for question, answer in self.turns(record))
        return self.dialogue_samples(ref, subset, str(row_id), turns, images=images, task_type=self.options.task_type)


class LlavaSource(DialogueSource):
    """The LLaVA instruction format: ``{id, image, conversations: [{from: human|gpt, value}]}``."""

    name = "llava"
    version = "1"
    description = "LLaVA conversation format: {id, image, conversations: [{from, value}]}, one sample per turn pair"
    Options = DialogueOptions


class ShareGPTSource(DialogueSource):
    """The ShareGPT format: ``{conversations: [{from, value}]}`` or ``{messages: [{role, content}]}``
    with an ``images`` list (the layout LLaMA-Factory and ms-swift read)."""

    name = "sharegpt"
    version = "1"
    description = "ShareGPT format: conversations [{from, value}] or messages [{role, content}] with images [...]"
    Options = DialogueOptions
    conversation_keys = ("conversations", "messages")
    image_keys = ("images", "image")

