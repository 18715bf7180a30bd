"""InternVL and LLaVA read mmat's exports as their training code does (restated in
tests/formats/upstream.py, which names the upstream functions and commits): the system prompt
stays the system prompt, one image tag per image lands in a human turn, nothing fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mmat_plugins.formatters.exports import InternVLFormatter, LlavaFormatter

from mmat_core.errors import ConfigError
from mmat_core.models import ImageRef, Trace
from tests.formats import cases, upstream


def multi_image() -> Trace:
    """The multi-turn receipt case with two images."""
    trace = cases.ocr_receipt()
    trace.sample.images = [ImageRef(sha256="a" * 64, path="a.jpg", width=4, height=4),
                           ImageRef(sha256="b" * 64, path="b.jpg", width=4, height=4)]
    return trace


def traces() -> list[Trace]:
    return [make() for make in cases.CASES.values()] + [multi_image()]


def rows(formatter: Any, out: Path) -> list[dict[str, Any]]:
    writer = formatter.open(out, cases.context())
    for trace in traces():
        writer.write(trace)
    path = writer.close()[0]
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]




def rr_system() -> str:
    from mmat_core import prompts

    return prompts.rr_system(cases.TOOLS, True)


def test_internvl2_5_keeps_the_system_prompt_free_of_image_tags(tmp_path: Path) -> None:
    for row in rows(InternVLFormatter(), tmp_path):
        encoded = upstream.internvl_get_item(row, "internvl2_5", "/data")
        assert encoded.system == rr_system()


def test_internvl2_5_replaces_one_image_tag_per_image_in_the_first_human_turn(tmp_path: Path) -> None:
    for row in rows(InternVLFormatter(), tmp_path):
        encoded = upstream.internvl_get_item(row, "internvl2_5", "/data")
        first_human = encoded.turns[0][1]
        assert first_human.count("<IMG_CONTEXT>") == len(encoded.images) and "<image>" not in first_human
        assert all("<IMG_CONTEXT>" not in value for _, value in encoded.turns[1:])


def test_internvl2_5_single_image_goes_through_the_multi_image_path_as_a_list(tmp_path: Path) -> None:
    first = rows(InternVLFormatter(), tmp_path)[0]
    assert first["image"] == ["cot/sroie/X51005.jpg"] and first["conversations"][0]["from"] == "system"


@pytest.mark.parametrize("template", ["internlm2-chat", "Hermes-2", "phi3-chat", "plain"])
def test_internvl_legacy_templates_get_no_system_turn_and_the_prompt_in_the_first_human_turn(tmp_path: Path, template: str) -> None:
    for row in rows(InternVLFormatter(template=template), tmp_path):
        encoded = upstream.internvl_get_item(row, template, "/data")
        assert encoded.turns[0][0] == "human" and rr_system() in encoded.turns[0][1]
        assert encoded.turns[0][1].startswith("<image>\n" if len(encoded.images) == 1 else "Image-1: <image>\n")


@pytest.mark.parametrize("template", ["internlm2-chat", "Hermes-2", "phi3-chat"])
def test_internvl_legacy_template_can_drop_the_system_prompt(tmp_path: Path, template: str) -> None:
    row = rows(InternVLFormatter(template=template, system="drop"), tmp_path)[0]
    assert "You are a visual assistant" not in json.dumps(row)
    upstream.internvl_get_item(row, template, "/data")


def test_internvl_refuses_a_system_turn_for_a_template_that_fails_on_it() -> None:
    with pytest.raises(ConfigError, match="KeyError: 'system'"):
        InternVLFormatter(template="Hermes-2", system="turn")


def test_the_old_internvl_layout_put_the_image_tag_into_the_system_prompt() -> None:
    # The layout of InternVL export version 1, kept here to show the mirror catches the defect.
    row = {"image": "x.jpg", "conversations": [{"from": "system", "value": "You are..."},
                                               {"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}
    assert upstream.internvl_get_item(row, "internvl2_5", "/d").system.startswith("<image>\n")
    with pytest.raises(KeyError, match="system"):
        upstream.internvl_get_item(row, "Hermes-2", "/d")


def test_llava_rows_have_one_image_and_load(tmp_path: Path) -> None:
    loaded = [upstream.llava_get_item(row, "/data") for row in rows(LlavaFormatter(), tmp_path)]
    assert len(loaded) == 3 and all(len(item.images) == 1 for item in loaded)
    assert all(item.turns[0][1].startswith("<image>\nYou are a visual assistant") for item in loaded)


def test_llava_quarantines_a_row_with_several_images(tmp_path: Path) -> None:
    writer = LlavaFormatter().open(tmp_path, cases.context())
    writer.write(multi_image())
    writer.close()
    assert [(r.reason, r.row) for r in writer.rejected] == [("too_many_images", "viscot/sroie/0001")]
    assert "one image per row" in writer.rejected[0].detail


def test_the_old_llava_layout_failed_in_llava_with_an_image_list() -> None:
    with pytest.raises(TypeError, match="not 'list'"):
        upstream.llava_get_item({"image": ["a.jpg", "b.jpg"], "conversations": [{"from": "human", "value": "<image>\nQ"}]}, "/d")
