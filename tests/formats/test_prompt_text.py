"""Prompts are written text: a line break only where the text means one, never inside a sentence."""

from __future__ import annotations

import re

import pytest

from mmat_core import prompts

#: A break inside a sentence: a letter, comma or semicolon before the new line and a letter after it
#: ("reasoning in steps\nand calling"). A break after a colon, a full stop, a placeholder or a
#: tag, or before a list item or a format example, is meant.
BREAK_INSIDE_SENTENCE = re.compile(r"[A-Za-z,;]\n[A-Za-z]")

TEMPLATES = {name: value for name, value in vars(prompts).items() if name.isupper() and isinstance(value, str)}


def sentence_breaks(text: str) -> list[str]:
    """The text around each line break that falls inside a sentence."""
    return [text[max(0, m.start() - 20):m.end() + 20] for m in BREAK_INSIDE_SENTENCE.finditer(text)]


def test_the_break_detector_catches_a_hard_wrapped_sentence() -> None:
    assert sentence_breaks("reasoning in steps\nand calling operators") == ["reasoning in steps\nand calling operators"]
    assert sentence_breaks("The operators are:\n{operators}\nWrite every step in this form:\n<THOUGHT>") == []


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_prompt_and_template_have_no_line_break_inside_a_sentence(name: str) -> None:
    assert sentence_breaks(TEMPLATES[name]) == []


def test_the_templates_checked_include_every_system_prompt() -> None:
    assert {"RR_SYSTEM", "ORR_SYSTEM", "GENERATOR_SYSTEM", "FIRST_TURN", "NO_TOOL"} <= set(TEMPLATES)


def test_rr_system_prompt_breaks_lines_only_between_its_parts() -> None:
    from tests.formats import cases

    lines = prompts.rr_system(cases.TOOLS).split("\n")
    assert lines[0].endswith("The operators available are:")
    assert [line for line in lines if line.startswith("- ")] == [f"- {t.name}: {t.description}" for t in cases.TOOLS]
    assert "Write every step in this form:" in lines and lines[-1].endswith("reply with the answer alone.")
