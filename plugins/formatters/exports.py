"""Exports of RR or ORR dialogues in the layouts training frameworks read.

Each export is a view of the same Trace (no regeneration) and has a JSON Schema in
``schemas/exports/``. The layouts, and the documentation each was checked against, are listed
in ``docs/formats.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from mmat_plugins.formatters.base import (
    data_url,
    ensure,
    export_images,
    image_bytes,
    merge_json_entry,
    tag_first_user,
    view_system,
)
from pydantic import Field

from mmat_core import ExportOptions, FinishingWriter, RecordFunction, ViewFormatter
from mmat_core.components import FormatContext, TraceWriter
from mmat_core.formatting import view_messages
from mmat_core.writers import JsonArrayWriter, RecordWriter, write_json_atomic

#: The script that feeds an export to its consumer's loader (runs in the consumer's Python).
CONSUMER_CHECKS = Path(__file__).with_name("consumer_checks.py")

#: The image placeholder of ms-swift, LLaMA-Factory, InternVL and LLaVA.
IMAGE_TAG = "<image>"

#: ShareGPT role names used by LLaMA-Factory, InternVL and LLaVA.
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def _sharegpt(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in messages]


def _writer_counts(writer: Any) -> list[tuple[Path, int]]:
    """(file, records) of a plain or split writer, train first."""
    if hasattr(writer, "train"):
        return [(writer.train.path, writer.train.count), (writer.val.path, writer.val.count)]
    return [(writer.path, writer.count)]


class _Export(ViewFormatter):
    """An export: options ``view`` (rr|orr) and ``image_root``; file named after format and view."""

    Options = ExportOptions
    #: Stem of the default file name; the view is appended (``ms_swift_rr.jsonl``).
    stem: ClassVar[str] = ""
    suffix: ClassVar[str] = "jsonl"

    #: What checks this layout when no consumer package can run it (``mmat export --check``).
    consumer_note: ClassVar[str] = ""

    def consumer_check(self, files: list[Path]) -> tuple[Path, list[str]] | None:
        """(script, arguments) that feed ``files`` to the consumer's own loader, or None."""
        return None

    def file_name(self) -> str:
        """``<stem>_<view>.<suffix>`` unless option ``file`` names it."""
        return str(self.options.file or f"{self.stem}_{self.options.view}.{self.suffix}")

    #: Whether the layout marks images with ``<image>`` in the text (the loader counts those tags).
    image_placeholder: ClassVar[bool] = True

    def messages(self, data: Mapping[str, Any], ctx: FormatContext, system: str) -> list[dict[str, str]]:
        """The RR or ORR dialogue of a trace dict. In a layout whose loader turns every ``<image>``
        into an image slot, a dialogue that already holds that text (a question about markup, an
        OCR result) would misplace or fail the images: such a trace is quarantined."""
        messages = view_messages(data, self.options.view, ctx.tools, ctx.rag_enabled, system=system)
        if self.image_placeholder:
            for index, message in enumerate(messages):
                ensure(IMAGE_TAG not in message["content"], "image_tag_in_text",
                       f"turn {index} ({message['role']}) holds the text {IMAGE_TAG}, which {self.name}'s loader "
                       "reads as an image slot")
        return messages

    def tagged(self, data: Mapping[str, Any], ctx: FormatContext, system: str) -> tuple[list[str], list[dict[str, str]]]:
        """The exported image paths and the dialogue with one ``<image>`` tag per image leading
        the first user turn (the convention of ms-swift and LLaMA-Factory)."""
        images = export_images(data, self.options.image_root)
        return images, tag_first_user(self.messages(data, ctx, system), "<image>" * len(images))


class MsSwiftFormatter(_Export):
    """ms-swift's standard layout: ``messages`` + ``images`` with one ``<image>`` tag per image."""

    name = "ms_swift"
    version = "1"
    description = "ms-swift JSONL: messages (system/user/assistant) + images, <image> tags in the first user turn"
    stem = "ms_swift"
    parallel_safe = True

    def consumer_check(self, files: list[Path]) -> tuple[Path, list[str]] | None:
        """ms-swift's ``load_dataset`` and ``load_image`` (``ROOT_IMAGE_DIR`` = ``image_root``)."""
        return CONSUMER_CHECKS, ["ms_swift", str(files[0]), self.options.image_root or ""]

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """ms-swift records."""
        system = view_system(self.options.view, ctx)

        def record(data: Mapping[str, Any]) -> dict[str, Any]:
            images, messages = self.tagged(data, ctx, system)
            return {"messages": messages, "images": images}

        return record


class LlamaFactoryOptions(ExportOptions):
    """Options of the LLaMA-Factory export."""

    dataset_name: str | None = Field(None, description="key of the dataset_info.json entry (default mmat_<view>)")


class LlamaFactoryFormatter(_Export):
    """LLaMA-Factory ShareGPT JSONL (``conversations``, ``system``, ``images``) plus its
    ``dataset_info.json`` entry, merged into an existing file in the output folder."""

    name = "llama_factory"
    version = "1"
    description = "LLaMA-Factory ShareGPT JSONL with images, and the dataset_info.json entry that registers it"
    stem = "llama_factory"
    Options = LlamaFactoryOptions

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """LLaMA-Factory records: the system prompt in its own column, turns human/gpt."""
        system = view_system(self.options.view, ctx)

        def record(data: Mapping[str, Any]) -> dict[str, Any]:
            images, messages = self.tagged(data, ctx, system)
            return {"conversations": _sharegpt(messages[1:]), "system": messages[0]["content"], "images": images}

        return record

    def consumer_check(self, files: list[Path]) -> tuple[Path, list[str]] | None:
        """LLaMA-Factory's loader and converter, ``media_dir`` = ``image_root`` (else the folder)."""
        base = self.options.dataset_name or f"mmat_{self.options.view}"
        names = [base] if len(files) == 2 else [f"{base}_train", f"{base}_val"]
        return CONSUMER_CHECKS, ["llama_factory", str(files[-1].parent), ",".join(names), self.options.image_root or ""]

    def dataset_info_entry(self, file_name: str) -> dict[str, Any]:
        """The ``dataset_info.json`` entry for one written file."""
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system", "images": "images"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }

    def wrap(self, writer: Any, out_dir: Path, ctx: FormatContext) -> TraceWriter:
        """Register the written file(s) in ``dataset_info.json``."""
        base = self.options.dataset_name or f"mmat_{self.options.view}"

        def finish(files: list[Path], inner: Any) -> list[Path]:
            info = out_dir / "dataset_info.json"
            names = [base] if len(files) == 1 else [f"{base}_train", f"{base}_val"]
            for key, path in zip(names, files):
                merge_json_entry(info, key, self.dataset_info_entry(path.name))
            return [info]

        return FinishingWriter(writer, finish)


#: InternVL's chat templates (``--conv_style``) and the preprocess function each selects in
#: ``LazySupervisedDataset.get_preprocess_function`` (internvl_chat/internvl/train/internvl_chat_finetune.py).
#: Only ``preprocess_internvl2_5`` reads a leading ``system`` turn; the others map roles with
#: ``{'human': ..., 'gpt': ...}`` and fail on it with ``KeyError: 'system'``.
INTERNVL_TEMPLATES = ("internvl2_5", "internlm2-chat", "Hermes-2", "phi3-chat", "plain")


class InternVLOptions(ExportOptions):
    """Options of the InternVL export."""

    template: Literal["internvl2_5", "internlm2-chat", "Hermes-2", "phi3-chat", "plain"] = Field(
        "internvl2_5", description="InternVL's --conv_style the data is for: internvl2_5 reads a system turn; "
                                   "the others (plain: any other template) take the system prompt in the first human turn",
    )
    system: Literal["auto", "turn", "prepend", "drop"] = Field(
        "auto", description="where the system prompt goes: a leading system turn (internvl2_5 only), prepended to the "
                            "first human turn, or dropped (the template's own system message is used); auto: turn for "
                            "internvl2_5, prepend otherwise",
    )
    meta_paths: Literal["absolute", "relative"] = Field(
        "absolute", description="the meta file's root and annotation: absolute paths (this machine), or relative to the "
                                "output folder (a bundle: run InternVL from that folder)",
    )


class InternVLFormatter(_Export):
    """InternVL chat fine-tuning JSONL (``id``, ``image``, ``width``/``height``, ``conversations``)
    plus the meta file its training scripts take (``--meta_path``).

    Mirrors ``LazySupervisedDataset`` of InternVL's ``internvl_chat_finetune.py`` (OpenGVLab/InternVL,
    commit b9b1bb86): a string ``image`` goes through ``multi_modal_get_item``, which prepends
    ``<image>\\n`` to ``conversations[0]`` when that turn has none, so with a leading system turn
    the image tag would land in the system prompt. With ``internvl2_5`` every image list is
    therefore written as a list (one image too): ``multi_modal_multi_image_get_item`` checks no
    turn, and ``preprocess_internvl2_5`` takes the system turn as the system prompt and replaces
    the ``<image>`` tags of the human turns in order.
    """

    name = "internvl"
    version = "2"
    description = "InternVL chat JSONL (image, conversations) per --conv_style template, and its meta JSON"
    stem = "internvl"
    Options = InternVLOptions
    consumer_note = ("InternVL is not a pip package: mmat's tests run this layout through a restatement of its "
                     "LazySupervisedDataset and preprocess functions (tests/formats/upstream.py, commits named there)")

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        if self.options.system == "turn" and self.options.template != "internvl2_5":
            from mmat_core.errors import ConfigError

            raise ConfigError(f"system=turn needs template=internvl2_5: InternVL's preprocess for {self.options.template} "
                              "fails on a system turn (KeyError: 'system'); use system=prepend or system=drop", key="system")

    def system_placement(self) -> str:
        """``turn``, ``prepend`` or ``drop``: where this export puts the system prompt."""
        if self.options.system != "auto":
            return str(self.options.system)
        return "turn" if self.options.template == "internvl2_5" else "prepend"

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """InternVL records for the chosen template."""
        system = view_system(self.options.view, ctx)
        root = self.options.image_root
        placement = self.system_placement()
        as_list = self.options.template == "internvl2_5"

        def record(data: Mapping[str, Any]) -> dict[str, Any]:
            images = export_images(data, root)
            messages = self.messages(data, ctx, system)
            turns = messages[1:]
            if placement == "prepend":
                turns = tag_first_user(turns, messages[0]["content"] + "\n\n")
            out: dict[str, Any] = {"id": data["id"]}
            if len(images) == 1:
                prefix = "<image>\n"
                out["image"] = images if as_list else images[0]
                ref = data["sample"]["images"][0]
                if ref.get("width") and ref.get("height"):
                    out["width"] = ref["width"]
                    out["height"] = ref["height"]
            elif images:
                prefix = "".join(f"Image-{i}: <image>\n" for i in range(1, len(images) + 1))
                out["image"] = images
            else:
                prefix = ""
            turns = tag_first_user(turns, prefix)
            if placement == "turn":
                turns = [messages[0], *turns]
            out["conversations"] = _sharegpt(turns)
            return out

        return record

    def wrap(self, writer: Any, out_dir: Path, ctx: FormatContext) -> TraceWriter:
        """Write ``<file>_meta.json`` naming each annotation file with its length."""

        def finish(files: list[Path], inner: Any) -> list[Path]:
            base = f"mmat_{self.options.view}"
            counts = _writer_counts(inner)
            keys = [base] if len(counts) == 1 else [f"{base}_train", f"{base}_val"]
            relative = self.options.meta_paths == "relative"
            root = "." if relative and self.options.image_root else (self.options.image_root or "")
            meta = {
                key: {"root": root, "annotation": path.name if relative else str(path.resolve()),
                      "data_augment": False, "repeat_time": 1, "length": count}
                for key, (path, count) in zip(keys, counts)
            }
            target = out_dir / f"{Path(self.file_name()).stem}_meta.json"
            return [write_json_atomic(target, meta)]

        return FinishingWriter(writer, finish)


class LlavaOptions(ExportOptions):
    """Options of the LLaVA export."""

    system: Literal["prepend", "drop"] = Field(
        "prepend", description="LLaVA's templates have no system turn: prepend the prompt to the first human turn, or drop it",
    )


class LlavaFormatter(_Export):
    """LLaVA's instruction-tuning JSON: one array of ``{id, image, conversations}``, streamed.

    Mirrors ``LazySupervisedDataset.__getitem__`` and ``preprocess_multimodal`` of
    haotian-liu/LLaVA ``llava/train/train.py`` (commit 0034661): ``image`` is one path joined to
    ``--image_folder``, ``<image>`` is moved to the start of its turn, and the conversation
    templates map only ``human`` and ``gpt``. Rows with several images are quarantined
    (``too_many_images``)."""

    name = "llava"
    version = "2"
    description = "LLaVA JSON array (id, image, conversations with <image>), written as a stream"
    stem = "llava"
    suffix = "json"
    Options = LlavaOptions
    consumer_note = ("LLaVA is not a pip package: mmat's tests run this layout through a restatement of train.py's "
                     "LazySupervisedDataset and preprocess_multimodal (tests/formats/upstream.py, commit named there)")
    writer_class: ClassVar[type[RecordWriter]] = JsonArrayWriter

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """LLaVA records."""
        system = view_system(self.options.view, ctx)
        root = self.options.image_root
        prepend = self.options.system == "prepend"

        def record(data: Mapping[str, Any]) -> dict[str, Any]:
            images = export_images(data, root)
            # LLaVA's LazySupervisedDataset opens `image` with os.path.join (a list fails) and its
            # preprocess_multimodal merges every <image> tag into one: one image per row.
            ensure(len(images) <= 1, "too_many_images",
                   f"{len(images)} images; LLaVA-1.5 (train.py LazySupervisedDataset) takes one image per row")
            messages = self.messages(data, ctx, system)
            turns = messages[1:]
            if prepend:
                turns = tag_first_user(turns, messages[0]["content"] + "\n\n")
            turns = tag_first_user(turns, "<image>\n" * len(images))
            out: dict[str, Any] = {"id": data["id"]}
            if images:
                out["image"] = images[0]
            out["conversations"] = _sharegpt(turns)
            return out

        return record


class OpenAIChatOptions(ExportOptions):
    """Options of the OpenAI chat fine-tuning export."""

    images: Literal["embed", "url", "none"] = Field(
        "embed", description="embed: base64 data URLs; url: image_base_url + path; none: text only",
    )
    image_base_url: str | None = Field(None, description="prefix of image URLs when images=url")


#: Image formats and count OpenAI's vision fine-tuning accepts.
OPENAI_IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
OPENAI_MAX_IMAGES = 10


class OpenAIChatFormatter(_Export):
    """OpenAI chat fine-tuning JSONL: ``messages`` with images as ``image_url`` content parts."""

    name = "openai_chat"
    version = "1"
    description = "OpenAI chat fine-tuning JSONL; images as base64 data URLs (default) or URLs"
    stem = "openai_chat"
    parallel_safe = True
    Options = OpenAIChatOptions
    image_placeholder = False

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        if self.options.images == "url" and not self.options.image_base_url:
            from mmat_core.errors import ConfigError

            raise ConfigError("images=url needs image_base_url (e.g. https://example.org/images/)", key="image_base_url")

    def consumer_check(self, files: list[Path]) -> tuple[Path, list[str]] | None:
        """Every row validated against the openai SDK's chat message types."""
        return CONSUMER_CHECKS, ["openai_chat", str(files[0])]

    def record_function(self, ctx: FormatContext) -> RecordFunction:
        """OpenAI chat records."""
        system = view_system(self.options.view, ctx)
        mode = self.options.images
        root = self.options.image_root
        base_url = (self.options.image_base_url or "").rstrip("/")

        def url_of(image: Mapping[str, Any], path: str) -> str:
            if mode == "url":
                # An absolute path (no image_root, or an image outside it) would publish this
                # machine's folders (/home/me/...) in the URL and point at nothing.
                ensure(not os.path.isabs(path), "local_image_path",
                       f"{path}: images=url would put this machine's absolute path into the URL; set image_root to "
                       f"the local folder served at image_base_url" + (f" (this image is outside {root})" if root else ""))
                return f"{base_url}/{path}"
            data, mime = image_bytes(image, ctx, root)
            ensure(mime in OPENAI_IMAGE_TYPES, "image_format_unsupported", f"{mime}; OpenAI takes JPEG, PNG or WEBP")
            return data_url(data, mime)

        def record(data: Mapping[str, Any]) -> dict[str, Any]:
            messages: list[dict[str, Any]] = list(self.messages(data, ctx, system))
            refs = data["sample"].get("images") or []
            if mode != "none" and refs:
                ensure(len(refs) <= OPENAI_MAX_IMAGES, "too_many_images", f"{len(refs)} > {OPENAI_MAX_IMAGES}")
                parts: list[dict[str, Any]] = [
                    {"type": "image_url", "image_url": {"url": url_of(ref, path)}}
                    for ref, path in zip(refs, export_images(data, root))
                ]
                for i, message in enumerate(messages):
                    if message["role"] == "user":
                        messages[i] = {"role": "user", "content": [*parts, {"type": "text", "text": message["content"]}]}
                        break
            return {"messages": messages}

        return record
