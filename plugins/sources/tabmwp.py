"""TabMWP (GitHub ``lupantech/PromptPG``, ``data/tabmwp/``): grade-school maths word problems
over tables, each table also rendered as an image.

Read layout: ``problems_{train,dev,test}.json``, ONE JSON object mapping a problem id to its
record (``question``, ``choices`` (list or null), ``answer``, ``unit``, ``table_title``, ``table``,
``ques_type`` (free_text | multi_choice), ``ans_type``, ``grade``, ...). Images: ``tables/<pid>.png``.

``datasets`` cannot stream this layout: its json builder treats a top-level object as one record
(or needs a ``field=`` holding a list), so it would load all 23,059 problems at once. The file is
read with the streaming JSON reader of :mod:`mmat_plugins.sources.readers` instead, one problem at
a time. The collection is not on the Hub: clone the repository and point ``path`` at
``data/tabmwp``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from mmat_core.errors import ConfigError
from mmat_core.models import SourceSample
from mmat_core.authoring.sources import ImageResolver, SourceRecord, RecordItem, RecordSource, SingleSetOptions, answers_field
from mmat_plugins.sources.readers import RowError, iter_json_items

#: Problems in the train split; the paper used all of them.
PAPER_COUNT = 23_059


class TabMWPOptions(SingleSetOptions):
    """Options of the ``tabmwp`` source."""

    path: str = Field(description="local folder data/tabmwp of a clone of lupantech/PromptPG")
    split: Literal["train", "dev", "test"] = Field("train", description="problems_<split>.json")
    image_root: str | None = Field(None, description="folder holding tables/<pid>.png; default: path")
    with_table_text: bool = Field(True, description="keep the table's text and title in meta (for offline tools)")


class TabMWPSource(RecordSource):
    """TabMWP, one sample per problem; the answer as the dataset gives it, the options of a
    multiple-choice problem in the question in TabMWP's own ``Options: (A) .. (B) ..`` form."""

    name = "tabmwp"
    version = "1"
    description = "TabMWP (lupantech/PromptPG data/tabmwp): table maths word problems, tables as images"
    licence = "CC BY-NC-SA 4.0"
    Options = TabMWPOptions
    #: ``mix: paper``: the paper's count, which is the whole train split.
    paper_mix: ClassVar[dict[str, int]] = {"tabmwp": PAPER_COUNT}

    def validate(self) -> None:
        """The problems file must exist locally."""
        opts = self.options
        self.file = Path(opts.path).expanduser() / f"problems_{opts.split}.json"
        if not self.file.is_file():
            raise ConfigError(f"{self.file} not found. TabMWP is published on GitHub, not the Hub: clone "
                              "lupantech/PromptPG and set path to its data/tabmwp folder", key="path")
        root = Path(opts.image_root or opts.path).expanduser()
        self.images = ImageResolver(root, check=opts.check_images, cache_size=0)

    def iter_records(self) -> Iterator[RecordItem]:
        """One problem at a time from the problems file."""
        for ref, record in iter_json_items(self.file):
            if not isinstance(record, (dict, RowError)):
                record = RowError("not_an_object", f"expected a problem record, got {type(record).__name__}")
            yield ref, None, record

    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample]:
        """The question (with the options of a multiple-choice problem), the answer unchanged, the
        table image. The option letter is never the answer: TabMWP's label is the option's text
        (``atlas``), which is what the final turn states; scoring still accepts the letter through
        ``choices``."""
        pid = ref.rsplit("#", 1)[-1]
        answer = answers_field(record.get("answer"), "answer")[0]
        question = record.get("question")
        choices = record.get("choices")
        if choices is not None:
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise RowError("field_type", "choices must be a list of strings or null")
            if answer not in choices:
                raise RowError("answer_not_in_choices", f"{answer!r} is not one of {choices}")
            if isinstance(question, str):
                question = question.strip() + "\n" + options_text(choices)
        image = self.images.from_path(f"tables/{pid}.png")
        meta = {"split": self.options.split, "unit": record.get("unit"), "ques_type": record.get("ques_type"),
                "ans_type": record.get("ans_type"), "grade": record.get("grade")}
        if self.options.with_table_text:
            meta.update(table_title=record.get("table_title"), table=record.get("table"))
        return [self.sample(subset=None, row=f"{self.options.split}/{pid}", turn=0, question=question, answers=[answer],
                            images=[image], task_type="multiple_choice" if choices else "math",
                            choices=choices, tags=["math", "table"], meta=meta, letter_constraint=False)]


def options_text(choices: list[str]) -> str:
    """TabMWP's own way of listing options in a prompt (PromptPG): ``Options: (A) atlas (B) novel``."""
    return "Options: " + " ".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(choices))
