"""Reading ``rr.jsonl`` / ``orr.jsonl`` and turning each record into model inputs with a loss mask.

A record is ``{"id", "messages": [{"role", "content"}, ...], "images": [paths], "provenance"}``
(:class:`mmat_core.models.TrainingRecord`). The images belong to the first user turn. Only the
assistant turns are trained: system prompt, questions and tool results get label ``-100``.

Masking works with any chat template that renders a dialogue as a growing prefix: the text of
assistant turn *i* is what ``messages[: i + 1]`` adds to ``messages[: i]`` rendered with a
generation prompt. The dialogue is cut at those boundaries and each piece is tokenised on its own,
so the label mask lines up with the tokens exactly (the image placeholder is expanded by the
processor inside the first piece).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mmat_core.errors import ConfigError, MmatError, first_validation_problem
from mmat_core.jsonl import BadLine, iter_jsonl
from mmat_core.models import Rejected, TrainingRecord

IGNORE_INDEX = -100
TRAINING_FILES = ("rr.jsonl", "orr.jsonl")


class EncodeError(MmatError, ValueError):
    """A record that cannot become a training sample; ``reason`` goes to the quarantine file."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def data_files(data: Path | Sequence[Path]) -> list[Path]:
    """The JSONL files behind ``--data``: files as given, a folder's ``rr.jsonl`` or ``orr.jsonl``."""
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [path / name for name in TRAINING_FILES if (path / name).exists()]
            if not found:
                raise ConfigError(f"no {' or '.join(TRAINING_FILES)} in {path}: pass the JSONL file to train on", key="data")
            if len(found) > 1:
                raise ConfigError(
                    f"{path} holds both {found[0].name} and {found[1].name}; the paper trains one model per format, "
                    f"so pass one file (--data {found[0]}), or both files explicitly to mix them",
                    key="data",
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"training data not found: {path}", key="data")
    return files


@dataclass
class LoadedRecord:
    """A validated record with its image paths resolved."""

    record: TrainingRecord
    images: list[Path]
    origin: str


def _resolve_image(name: str, data_dir: Path, image_root: Path | None) -> Path | None:
    path = Path(name)
    if path.is_absolute():
        return path if path.exists() else None
    for base in (image_root, data_dir, Path.cwd()):
        if base is not None and (base / path).exists():
            return base / path
    return None


def load_records(files: Sequence[Path], image_root: Path | None = None) -> tuple[list[LoadedRecord], list[Rejected]]:
    """Read and validate every line; bad lines and missing images become Rejected rows."""
    records: list[LoadedRecord] = []
    rejected: list[Rejected] = []
    for file in files:
        for number, data in iter_jsonl(file):
            origin = f"{file}:{number}"
            if isinstance(data, BadLine):
                rejected.append(_rejected(origin, "not_json", data.message))
                continue
            try:
                record = TrainingRecord.model_validate(data)
            except ValidationError as exc:
                # whole="": a line that is not an object keeps the reason it always had (": message").
                rejected.append(_rejected(origin, "invalid_record", first_validation_problem(exc, whole="")))
                continue
            if not any(message.role == "assistant" for message in record.messages):
                rejected.append(_rejected(origin, "no_assistant_turn"))
                continue
            resolved = [_resolve_image(name, file.parent, image_root) for name in record.images]
            missing = [name for name, path in zip(record.images, resolved) if path is None]
            if missing:
                rejected.append(_rejected(origin, "image_missing", ", ".join(missing)))
                continue
            records.append(LoadedRecord(record, [p for p in resolved if p is not None], origin))
    return records, rejected


def _rejected(origin: str, reason: str, detail: str = "") -> Rejected:
    return Rejected(source="training_data", row=origin, reason=reason, detail=detail, stage="train")


def chat_messages(record: TrainingRecord, n_images: int) -> list[dict[str, Any]]:
    """Messages in the processor's multimodal chat layout; the images go before the first user text."""
    messages: list[dict[str, Any]] = []
    placed = n_images == 0
    for message in record.messages:
        content: list[dict[str, Any]] = []
        if not placed and message.role == "user":
            content.extend({"type": "image"} for _ in range(n_images))
            placed = True
        content.append({"type": "text", "text": message.content})
        messages.append({"role": message.role, "content": content})
    return messages


def _render(processor: Any, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def segments(processor: Any, messages: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The rendered dialogue cut into (text, trained) pieces; assistant turns are the trained ones."""
    if getattr(processor, "chat_template", None) is None and getattr(getattr(processor, "tokenizer", None), "chat_template", None) is None:
        raise ConfigError("the model's processor has no chat template: set `chat_template` in its processor config", key="model")
    full = _render(processor, messages, False)
    pieces: list[tuple[str, bool]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(processor, messages[:index], True)
        after = _render(processor, messages[: index + 1], False)
        if not (after.startswith(before) and full.startswith(after)) or len(before) < cursor:
            raise EncodeError("chat_template_not_prefix", "the chat template does not render the dialogue as a growing prefix")
        pieces.append((full[cursor : len(before)], False))
        pieces.append((after[len(before) :], True))
        cursor = len(after)
    if cursor < len(full):
        pieces.append((full[cursor:], False))
    return [(text, trained) for text, trained in pieces if text]


class SampleEncoder:
    """Turns a loaded record into ``input_ids``, ``labels``, ``attention_mask`` and image tensors."""

    def __init__(self, processor: Any, max_length: int) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_length = max_length

    def _images(self, paths: Sequence[Path]) -> list[Any]:
        from PIL import Image

        images = []
        for path in paths:
            try:
                with Image.open(path) as img:
                    images.append(img.convert("RGB"))
            except Exception as exc:  # noqa: BLE001 - any decoder error means the same: quarantine the record
                raise EncodeError("image_unreadable", f"{path}: {type(exc).__name__}: {exc}") from None
        return images

    def encode(self, loaded: LoadedRecord) -> dict[str, Any]:
        """Encode one record; raise EncodeError (with a quarantine reason) when it cannot be trained."""
        import torch

        messages = chat_messages(loaded.record, len(loaded.images))
        pieces = segments(self.processor, messages)
        images = self._images(loaded.images)
        input_ids: list[int] = []
        labels: list[int] = []
        extra: dict[str, Any] = {}
        image_end = 0
        for position, (text, trained) in enumerate(pieces):
            if position == 0 and images:
                # The processor expands the image placeholder into the model's image tokens.
                out = self.processor(text=[text], images=images, return_tensors="pt", add_special_tokens=False)
                ids = out["input_ids"][0].tolist()
                extra = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask") and hasattr(v, "shape")}
                image_end = len(ids)
            else:
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            input_ids.extend(ids)
            labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
        if image_end > self.max_length:
            raise EncodeError("too_long", f"the prompt with its image tokens takes {image_end} tokens > max_length {self.max_length}")
        input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
        if all(label == IGNORE_INDEX for label in labels):
            raise EncodeError("too_long", f"no assistant token left within max_length {self.max_length}")
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.ones(len(input_ids), dtype=torch.long),
            **extra,
        }


def collate(samples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad token tensors into a batch; image tensors are concatenated along their first axis
    (one row per image for LLaVA-style models, one row per patch for Qwen2-VL-style ones)."""
    import torch

    length = max(int(s["input_ids"].shape[0]) for s in samples)
    batch: dict[str, Any] = {}
    for key, fill in (("input_ids", pad_id), ("labels", IGNORE_INDEX), ("attention_mask", 0)):
        rows = [torch.nn.functional.pad(s[key], (0, length - s[key].shape[0]), value=fill) for s in samples]
        batch[key] = torch.stack(rows)
    for key in samples[0]:
        if key not in batch:
            batch[key] = torch.cat([s[key] for s in samples], dim=0)
    return batch


def iter_order(count: int, epochs: float, seed: int) -> Iterator[int]:
    """Record indices for the whole run: each epoch a fresh seeded shuffle; a fractional last epoch
    takes the first part of its shuffle."""
    import random

    rng = random.Random(seed)
    whole = int(epochs)
    for _ in range(whole):
        order = list(range(count))
        rng.shuffle(order)
        yield from order
    rest = round((epochs - whole) * count)
    if rest:
        order = list(range(count))
        rng.shuffle(order)
        yield from order[:rest]
