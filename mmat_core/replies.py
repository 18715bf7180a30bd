"""Reading a JSON object out of a model's reply: the one place the engine, the critics, the LLM
backends and the operators do it, so a code fence or a sentence around the object is tolerated
the same way everywhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mmat_core.errors import MmatError

#: A Markdown code fence (with or without a language tag) opening or closing a line.
_FENCE = re.compile(r"^```[A-Za-z]*\s*|\s*```$", re.MULTILINE)


class ReplyJSONError(MmatError, ValueError):
    """A model reply that holds no readable JSON object; the message says what is wrong, in words
    a repair prompt can hand back to the model (``no JSON object found``, ``invalid JSON (...)``)."""


def strip_code_fence(text: str) -> str:
    """``text`` stripped, without the Markdown code fences that open or close any of its lines."""
    body = text.strip()
    if "```" in body:  # most replies have no fence: skip the regex
        body = _FENCE.sub("", body).strip()
    return body


def extract_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's reply: from its first ``{`` to its last ``}``, after code
    fences are removed, so prose before or after the object is tolerated.

    Raises :class:`ReplyJSONError`: ``the reply was empty``, ``no JSON object found``, ``invalid
    JSON ({parser's message} at position {n})`` or ``the JSON is not an object``."""
    body = strip_code_fence(text)
    if not body:
        raise ReplyJSONError("the reply was empty")
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise ReplyJSONError("no JSON object found")
    try:
        value = json.loads(body[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ReplyJSONError(f"invalid JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise ReplyJSONError("invalid JSON (nested deeper than the parser allows)") from None
    if not isinstance(value, dict):  # pragma: no cover - a text from "{" to "}" parses to an object
        raise ReplyJSONError("the JSON is not an object")
    return value
