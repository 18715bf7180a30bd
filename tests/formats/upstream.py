"""What InternVL and LLaVA do with a training row, restated from their source (they are not pip
packages, so their loaders cannot run here). Each function names the upstream function, file and
commit it restates; only the behaviour that decides where the system prompt and the image tags
end up is kept (no tokenizer, no tensors). Written for these tests, not copied.

* InternVL: OpenGVLab/InternVL, internvl_chat/internvl/train/internvl_chat_finetune.py at
  b9b1bb86a8e786f6479557d03aacc3f8b6b4c4f6 (``LazySupervisedDataset.__getitem__``,
  ``multi_modal_get_item``, ``multi_modal_multi_image_get_item``, ``get_preprocess_function``) and
  internvl_chat/internvl/train/dataset.py at 1831ceb9a2b6dd90ae1b714c2b4a76748c8b42b1
  (``preprocess``, ``preprocess_mpt``, ``preprocess_phi3``, ``preprocess_internlm``,
  ``preprocess_internvl2_5``).
* LLaVA: haotian-liu/LLaVA, llava/train/train.py at 0034661529f5cbadb50aaaaa72fe4ff046048378
  (``LazySupervisedDataset.__getitem__``, ``preprocess_multimodal``, ``preprocess_v1``).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

IMAGE = "<image>"


@dataclass
class Encoded:
    """What the trainer would tokenize: the system prompt, the turns, the images it opens."""

    system: str | None
    turns: list[tuple[str, str]]
    images: list[str]


def internvl_get_item(row: dict[str, Any], template: str, root: str) -> Encoded:
    """``LazySupervisedDataset.__getitem__`` for one row: dispatch on the type of ``image``, the
    single-image path's ``<image>`` check on ``conversations[0]``, then the template's preprocess."""
    row = copy.deepcopy(row)
    conversations = row["conversations"]
    image = row.get("image")
    if isinstance(image, list):  # multi_modal_multi_image_get_item: no turn is touched
        paths = [os.path.join(root, p) for p in image]
    elif image:  # multi_modal_get_item
        if IMAGE not in conversations[0]["value"]:
            conversations[0]["value"] = IMAGE + "\n" + conversations[0]["value"]
        paths = [os.path.join(root, image)]
    else:
        paths = []
    if template == "internvl2_5":
        return _preprocess_internvl2_5(conversations, paths)
    return _preprocess_two_roles(conversations, paths, strip=template == "internlm2-chat")


def _preprocess_internvl2_5(conversations: list[dict[str, str]], paths: list[str]) -> Encoded:
    system = None
    if conversations[0]["from"] == "system":
        system, conversations = conversations[0]["value"], conversations[1:]
    used = 0
    turns = []
    for turn in conversations:
        value = turn["value"]
        if turn["from"] == "human":  # only human turns have their tags replaced, in order
            for _ in range(value.count(IMAGE)):
                if used == len(paths):
                    break
                value = value.replace(IMAGE, "<IMG_CONTEXT>", 1)
                used += 1
        elif turn["from"] != "gpt":
            raise NotImplementedError(turn["from"])
        turns.append((turn["from"], value))
    assert used == len(paths), f"{used} != {len(paths)}"
    return Encoded(system, turns, paths)


def _preprocess_two_roles(conversations: list[dict[str, str]], paths: list[str], strip: bool) -> Encoded:
    roles = {"human": "user", "gpt": "assistant"}
    if roles[conversations[0]["from"]] != "user":  # KeyError: 'system' on a system turn
        conversations = conversations[1:]
    turns = []
    for j, turn in enumerate(conversations):
        role = roles[turn["from"]]
        assert role == ("user", "assistant")[j % 2]
        turns.append((turn["from"], turn["value"].strip() if strip else turn["value"]))
    text = "".join(v for _, v in turns)
    for _ in paths:
        text = text.replace(IMAGE, "<IMG_CONTEXT>", 1)
    return Encoded(None, turns, paths)


def llava_get_item(row: dict[str, Any], image_folder: str) -> Encoded:
    """``LazySupervisedDataset.__getitem__`` + ``preprocess_multimodal`` + the role mapping of
    ``preprocess_v1`` for one row."""
    row = copy.deepcopy(row)
    paths = []
    if "image" in row:
        image = row["image"]
        if not isinstance(image, str):
            raise TypeError(f"join() argument must be str, bytes, or os.PathLike object, not '{type(image).__name__}'")
        paths = [os.path.join(image_folder, image)]
    turns = []
    for turn in row["conversations"]:
        value = turn["value"]
        if paths and IMAGE in value:
            value = (IMAGE + "\n" + value.replace(IMAGE, "").strip()).strip()
        turns.append((turn["from"], value))
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    if roles[turns[0][0]] != "USER":
        turns = turns[1:]
    for j, (who, _) in enumerate(turns):
        assert roles[who] == ("USER", "ASSISTANT")[j % 2]
    return Encoded(None, turns, paths)
