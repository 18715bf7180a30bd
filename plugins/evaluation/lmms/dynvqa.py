"""The released Dyn-VQA file, made ready for mmat's lmms-eval task.

The OmniSearch repository releases Dyn-VQA as JSON Lines (``dataset/DynVQA_en.jsonl`` and
``DynVQA_zh.jsonl``), one object per question: ``image_url`` (a remote URL), ``question``,
``question_id``, ``answer`` (a list of reference answers in Chinese and English, which may hold
numbers as well as strings) and ``gloden_query`` (sic: the golden query, the question with the
entity in the image named). lmms-eval's JSON loader needs one type per column and the images must
be local, so this module writes a prepared copy: answers as strings and ``image`` as the path of
the downloaded picture, looked up by the file name of its URL in an images folder. Rows whose
image is missing or whose fields are broken are set aside with a reason, never silently dropped.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, field_validator

from mmat_core import BadLine, ConfigError, iter_jsonl


class DynVQARow(BaseModel):
    """One released Dyn-VQA question (the fields mmat's task reads)."""

    model_config = ConfigDict(extra="ignore")
    question_id: str
    question: str
    image_url: str
    answer: list[str]
    gloden_query: str | None = None

    @field_validator("answer", mode="before")
    @classmethod
    def answers_as_strings(cls, value: object) -> object:
        """Released answers mix strings and numbers (``["zero", 0]``): keep them all, as text."""
        if isinstance(value, list):
            return [str(item) for item in value if item is not None]
        return value

    @field_validator("question_id", mode="before")
    @classmethod
    def id_as_string(cls, value: object) -> object:
        """Ids are strings (``en1``); accept numbers too."""
        return str(value) if isinstance(value, int) else value


class PreparedDynVQA(BaseModel):
    """What :func:`prepare_dynvqa` wrote and set aside."""

    path: Path
    kept: int
    rejected: list[dict[str, str]]


def image_name(url: str) -> str:
    """The file name an image URL is stored under locally (the last path segment)."""
    return PurePosixPath(urlparse(url).path).name


def prepare_dynvqa(source: Path, images: Path | None, out: Path, *, golden: bool = True,
                   limit: int | None = None) -> PreparedDynVQA:
    """Write the prepared copy of ``source`` to ``out`` (images looked up in ``images``, default ``source``'s
    folder ``/images``); rows without their image or, in golden mode, without a golden query are set aside."""
    if not source.is_file():
        raise ConfigError(f"--dynvqa: no such file {source} (the released DynVQA_en.jsonl or DynVQA_zh.jsonl)")
    folder = images or source.parent / "images"
    if not folder.is_dir():
        raise ConfigError(f"Dyn-VQA images folder {folder} does not exist: download each image_url there under its "
                          "file name (or name the folder with --dynvqa-images)")
    kept: list[dict[str, object]] = []
    rejected: list[dict[str, str]] = []
    for number, item in iter_jsonl(source):
        where = f"{source}:{number}"
        if isinstance(item, BadLine):
            rejected.append({"row": where, "reason": item.reason})
            continue
        if not isinstance(item, dict):
            rejected.append({"row": where, "reason": "invalid_row"})
            continue
        try:
            row = DynVQARow.model_validate(item)
        except ValueError:
            rejected.append({"row": where, "reason": "invalid_row"})
            continue
        picture = folder / image_name(row.image_url)
        if not row.answer:
            rejected.append({"row": where, "reason": "no_answer"})
        elif golden and not row.gloden_query:
            rejected.append({"row": where, "reason": "no_golden_query"})
        elif not image_name(row.image_url) or not picture.is_file():
            rejected.append({"row": where, "reason": "image_missing"})
        else:
            kept.append({"question_id": row.question_id, "question": row.question,
                         "gloden_query": row.gloden_query or row.question, "answer": row.answer,
                         "image": str(picture.resolve())})
        if limit is not None and len(kept) >= limit:
            break
    if not kept:
        reasons = sorted({r["reason"] for r in rejected})
        raise ConfigError(f"--dynvqa {source}: no usable question ({len(rejected)} set aside: {', '.join(reasons) or 'empty file'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept), encoding="utf-8")
    return PreparedDynVQA(path=out, kept=len(kept), rejected=rejected)
