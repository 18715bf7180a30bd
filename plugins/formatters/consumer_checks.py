"""Feed an export to its consumer's own loading code: ``python consumer_checks.py FORMAT ARGS...``.

A standalone script (it imports nothing from mmat) so it runs in whichever environment holds the
consumer: mmat's own (``mmat export --check``), or a separate one (``--check-python PATH``, the
test suite's ``.consumers/<name>`` environments). It prints one JSON object and exits 0 (the
consumer read every row), 1 (it did not: ``problems`` says why) or 3 (the consumer is not
installed in this Python).

| format | consumer code run |
|---|---|
| ms_swift | ms-swift ``swift.dataset.load_dataset`` (its row preprocessor), then every image through ``swift.template.vision_utils.load_image`` with ``ROOT_IMAGE_DIR`` |
| llama_factory | LLaMA-Factory ``llamafactory.data.loader._get_merged_dataset`` (``dataset_info.json`` parser, file loader, ShareGPT converter with ``media_dir``) |
| hf_dataset | ``datasets.load_dataset(folder)`` by the card, every image decoded |
| openai_chat | the openai SDK's ``ChatCompletionMessageParam`` types, validated with pydantic |
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

#: The distribution each check needs, named in the "not installed" message.
PACKAGES = {"ms_swift": "ms-swift", "llama_factory": "llamafactory", "hf_dataset": "datasets", "openai_chat": "openai"}
MISSING = 3


def _rows(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check_ms_swift(path: str, image_root: str = "") -> dict[str, Any]:
    """ms-swift's dataset loader and image loader over a ``ms_swift_*.jsonl`` file."""
    if image_root:
        os.environ["ROOT_IMAGE_DIR"] = image_root
    from swift.dataset import load_dataset
    from swift.template.vision_utils import load_image

    train, _ = load_dataset([path], num_proc=1)
    problems = []
    for index in range(len(train)):
        row = train[index]
        images = [image["path"] if isinstance(image, dict) else image for image in row.get("images") or []]
        tags = sum(str(message["content"]).count("<image>") for message in row["messages"])
        if tags != len(images):
            problems.append(f"row {index}: {tags} <image> tags for {len(images)} images")
        for image in images:
            try:
                load_image(image)
            except Exception as exc:  # noqa: BLE001 - the consumer's own error, reported as it is
                problems.append(f"row {index}: image {image}: {type(exc).__name__}: {exc}")
    return {"rows": len(train), "problems": problems}


def check_llama_factory(dataset_dir: str, names: str, media_dir: str = "") -> dict[str, Any]:
    """LLaMA-Factory's loader and converter for the ``dataset_info.json`` entries ``names`` (comma separated)."""
    from llamafactory.data.loader import _get_merged_dataset
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    data_args = DataArguments(dataset=names, dataset_dir=dataset_dir, media_dir=media_dir or dataset_dir)
    training_args = Seq2SeqTrainingArguments(output_dir=os.path.join(dataset_dir, ".llamafactory-check"), report_to=[])
    merged = _get_merged_dataset(names.split(","), ModelArguments(model_name_or_path="unused"), data_args, training_args, "sft")
    problems = []
    for index in range(len(merged)):
        row = merged[index]
        for image in row.get("_images") or []:
            if not os.path.isfile(image):
                problems.append(f"row {index}: image {image} not found (media_dir {data_args.media_dir})")
        if not row["_prompt"] or not row["_response"]:
            problems.append(f"row {index}: the converter found no prompt or response")
    return {"rows": len(merged), "problems": problems}


def check_hf_dataset(folder: str) -> dict[str, Any]:
    """``datasets.load_dataset`` on the dataset folder, by its card; every image decoded."""
    import datasets

    loaded = datasets.load_dataset(folder)
    problems, rows = [], 0
    for split, table in loaded.items():
        for index in range(table.num_rows):
            rows += 1
            try:
                for image in table[index]["images"]:
                    image.load()
            except Exception as exc:  # noqa: BLE001 - any decoding error is a finding
                problems.append(f"{split} row {index}: {type(exc).__name__}: {exc}")
    return {"rows": rows, "splits": sorted(loaded), "problems": problems}


def check_openai_chat(path: str) -> dict[str, Any]:
    """Every row's ``messages`` validated against the openai SDK's ``ChatCompletionMessageParam``."""
    from openai.types.chat import ChatCompletionMessageParam
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(list[ChatCompletionMessageParam])
    rows = _rows(path)
    problems = []
    for index, row in enumerate(rows):
        try:
            for message in adapter.validate_python(row["messages"]):
                if not isinstance(message.get("content"), str):
                    list(message["content"])  # content parts validate lazily, as they are iterated
        except (ValidationError, KeyError, TypeError) as exc:
            problems.append(f"row {index}: {str(exc).splitlines()[0]}")
    return {"rows": len(rows), "problems": problems}


CHECKS: dict[str, Callable[..., dict[str, Any]]] = {
    "ms_swift": check_ms_swift, "llama_factory": check_llama_factory,
    "hf_dataset": check_hf_dataset, "openai_chat": check_openai_chat,
}


def main(argv: list[str]) -> int:
    """Run one check; print its JSON report."""
    if not argv or argv[0] not in CHECKS:
        print(json.dumps({"ok": False, "problems": [f"usage: consumer_checks.py {{{','.join(CHECKS)}}} ARGS..."]}))
        return 2
    name = argv[0]
    try:
        report = CHECKS[name](*argv[1:])
    except ImportError as exc:
        print(json.dumps({"format": name, "ok": False, "missing": PACKAGES[name], "python": sys.executable,
                          "problems": [f"{PACKAGES[name]} is not installed in {sys.executable} ({exc})"]}))
        return MISSING
    except Exception as exc:  # noqa: BLE001 - the consumer refused the data: that is the finding
        report = {"rows": 0, "problems": [f"{type(exc).__name__}: {exc}"]}
    report = {"format": name, "ok": not report["problems"], **report}
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
