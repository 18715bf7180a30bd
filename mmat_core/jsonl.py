"""Reading a JSONL file line by line: the one loop every reader of JSONL uses (sources, the
benchmark reader, the importer, ``mmat validate``, the viewer, training data, corpora, batch
results), so blank lines, line numbers, bytes that are not UTF-8 and lines that are not JSON are
handled the same way everywhere.

Each caller keeps its own policy for a bad line: quarantine it (``on_error="yield"``: the line
comes out as a :class:`BadLine` beside the good ones) or stop (``on_error="raise"``:
:class:`JsonlLineError` naming the file and line).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mmat_core.errors import MmatError


@dataclass(frozen=True)
class BadLine:
    """A line that could not be read.

    ``reason`` is ``invalid_utf8``, ``invalid_json``, ``json_too_deep`` or ``line_too_long``; ``detail`` is the
    parser's full message (with its position); ``message`` is the parser's message alone
    (``Expecting value``), for callers that report the line number themselves; ``error`` is the
    exception itself (a pydantic ``ValidationError`` when ``loads`` validates)."""

    reason: Literal["invalid_utf8", "invalid_json", "json_too_deep", "line_too_long"]
    detail: str
    message: str
    error: Exception


class JsonlLineError(MmatError, ValueError):
    """A line of a JSONL file that could not be read, with ``on_error="raise"``."""

    def __init__(self, name: str, number: int, bad: BadLine) -> None:
        super().__init__(f"{name}:{number}: {bad.detail}")
        self.number = number
        self.bad = bad


#: The longest line read from a file (64 MiB). A longer one is a bad line (``line_too_long``) and
#: is skipped without ever being held whole: one broken or hostile line must not take the
#: machine's memory (a JSONL row of a QA dataset is a few kilobytes).
DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
#: How much of an over-long line is read at a time while skipping to its end.
_SKIP_CHUNK = 1024 * 1024


class _LineTooLong(ValueError):
    """Marks a line longer than the cap (never raised out of this module)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the line is longer than {limit:,} bytes")


def _bounded_lines(handle: Any, limit: int) -> Iterator[bytes | _LineTooLong]:
    """The lines of a binary file, each read with at most ``limit + 1`` bytes in memory; a longer
    line comes out as a :class:`_LineTooLong` after the rest of it is skipped in chunks."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while True:  # skip to the end of the over-long line
            rest = handle.readline(_SKIP_CHUNK)
            if not rest or rest.endswith(b"\n"):
                break
        yield _LineTooLong(limit)


def _bad_line(exc: Exception) -> BadLine:
    if isinstance(exc, _LineTooLong):
        return BadLine("line_too_long", str(exc), str(exc), exc)
    if isinstance(exc, UnicodeDecodeError):
        return BadLine("invalid_utf8", f"byte {exc.start}: {exc.reason}", exc.reason, exc)
    if isinstance(exc, RecursionError):
        return BadLine("json_too_deep", "the line nests arrays or objects deeper than the JSON parser allows",
                       "nested too deep", exc)
    return BadLine("invalid_json", str(exc), exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc), exc)


def iter_jsonl(source: Path | Iterable[str | bytes], *, on_error: Literal["yield", "raise"] = "yield",
               loads: Callable[[str], Any] = json.loads,
               max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of ``source`` (a file, read as bytes, or
    lines already in memory), counting from 1; ``loads`` parses one line's text (``json.loads``,
    or a pydantic ``model_validate_json``, whose errors count as invalid JSON).

    A line that is not UTF-8, not JSON, nested too deep or (in a file) longer than
    ``max_line_bytes`` gives ``(number, BadLine)`` with ``on_error="yield"``, or raises
    :class:`JsonlLineError` with ``on_error="raise"``."""
    name = source.name if isinstance(source, Path) else "(lines)"
    if isinstance(source, Path):
        with source.open("rb") as handle:
            yield from _lines(_bounded_lines(handle, max_line_bytes), name, on_error, loads)
    else:
        yield from _lines(source, name, on_error, loads)


def _lines(lines: Iterable[str | bytes | _LineTooLong], name: str, on_error: str,
           loads: Callable[[str], Any]) -> Iterator[tuple[int, Any]]:
    for number, raw in enumerate(lines, 1):
        if not isinstance(raw, _LineTooLong) and not raw.strip():
            continue
        try:
            if isinstance(raw, _LineTooLong):
                raise raw
            value = loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            bad = _bad_line(exc)
            if on_error == "raise":
                raise JsonlLineError(name, number, bad) from None
            yield number, bad
            continue
        yield number, value
