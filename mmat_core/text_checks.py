"""Checks on text that every stage applies the same way.

At the bottom of the layers (docs/architecture.md): curation checks questions and answers with
it, the rationale loop checks model text with it, and neither imports the other.
"""

from __future__ import annotations

import re

#: Control characters (NUL, escape sequences, bell...) have no place in training text: they can
#: corrupt terminals and tokenizers downstream. Newlines and tabs are allowed.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def find_control_character(text: str) -> re.Match[str] | None:
    """The first control character in ``text`` (newlines and tabs are allowed), or None. The one
    check for questions, answers and model text (the rationale loop re-asks such a reply)."""
    return CONTROL_CHARACTER.search(text)
