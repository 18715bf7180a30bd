"""Streaming readers for the file layouts the sources meet: JSON Lines, one big JSON array or
object, and anything ``datasets`` can stream (Hub ids, parquet shards).

Every reader yields ``(row_ref, record)`` pairs one at a time; ``row_ref`` says where the record
came from (``file:line`` or ``file#key``) and goes into quarantine entries. A record that cannot be
read is yielded as a :class:`RowError` in place of the record, so one bad line never stops a file.

Why local JSON is not read through ``datasets``: its ``json`` builder parses blocks of lines with
pyarrow, so a single line with invalid UTF-8, broken JSON or a field whose type changes mid-file
raises for the whole file (checked with datasets 5.2: ``ValueError: Invalid UTF-8 sequence``).
The line reader below quarantines that one line and goes on. ``datasets`` is still used for Hub ids
and for parquet, where the column types are fixed by the file.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmat_core.errors import RowError
from mmat_core.jsonl import BadLine
from mmat_core.jsonl import iter_jsonl as read_jsonl_lines

#: Read size of the streaming JSON reader; a record may be larger (the buffer grows as needed).
CHUNK_CHARS = 1 << 20
#: A single item larger than this is refused rather than buffered without end.
MAX_ITEM_CHARS = 256 << 20
_WHITESPACE = re.compile(r"[\s,]*")
_SURROGATE = re.compile("[\udc80-\udcff]")


def looks_local(path: str) -> bool:
    """Whether ``path`` names something on disk (else it is taken as a Hub dataset id)."""
    return Path(path).expanduser().exists() or path.startswith((".", "/", "~")) or "\\" in path


#: A JSON escape of a surrogate code point (``\\uD800``-``\\uDFFF``); a row holding one is walked
#: for a lone surrogate (a proper pair, an emoji written as two escapes, decodes to one character).
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_ANY_SURROGATE = re.compile("[\ud800-\udfff]")
LONE_SURROGATE = "a \\u escape names a lone surrogate, which UTF-8 (and so the run store) cannot hold"


def holds_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value has a lone surrogate in any string, key or value, at any depth
    (a loop, not recursion: the value may nest as deep as the parser allowed)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii() and _ANY_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class _LoneSurrogateError(ValueError):
    """Raised by :func:`_loads_utf8` for a line that parses but holds a lone surrogate."""


def _loads_utf8(text: str) -> Any:
    """``json.loads``, refusing a line whose escapes leave a lone surrogate (SQLite stores UTF-8:
    such a string would crash the store when the row, or its quarantine entry, is written)."""
    value = json.loads(text)
    if _ESCAPED_SURROGATE.search(text) and holds_lone_surrogate(value):
        raise _LoneSurrogateError(LONE_SURROGATE)
    return value


def iter_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any] | RowError]]:
    """Yield each line of a JSON Lines file as a dict; bad lines come back as RowError (a lone
    surrogate escape as ``invalid_utf8``)."""
    for number, value in read_jsonl_lines(path, loads=_loads_utf8):
        ref = f"{path.name}:{number}"
        if isinstance(value, BadLine) and isinstance(value.error, _LoneSurrogateError):
            yield ref, RowError("invalid_utf8", LONE_SURROGATE)
        elif isinstance(value, BadLine):
            yield ref, RowError(value.reason, value.detail)
        elif not isinstance(value, dict):
            yield ref, RowError("not_an_object", f"expected a JSON object, got {type(value).__name__}")
        else:
            yield ref, value


def iter_json_items(path: Path) -> Iterator[tuple[str, Any | RowError]]:
    """Stream the items of a file holding one big JSON array or object, one item at a time.

    An array yields ``(index, element)``, an object ``(key, value)``: TabMWP's problems file is a
    dict from problem id to record, Visual CoT's ``viscot_363k.json`` a list. The file is decoded
    with ``surrogateescape`` so that an item with invalid UTF-8 is quarantined alone (its text holds
    lone surrogates), not the whole file.
    """
    decoder = json.JSONDecoder()
    name = path.name
    with path.open("rb") as fh:
        reader = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        buffer = ""
        eof = False

        def fill() -> bool:
            nonlocal buffer, eof
            if eof:
                return False
            chunk = fh.read(CHUNK_CHARS)
            eof = not chunk
            buffer += reader.decode(chunk, final=eof)
            return not eof or bool(buffer)

        fill()
        pos = _WHITESPACE.match(buffer, 0).end()  # type: ignore[union-attr]
        while pos >= len(buffer) and fill():
            pos = _WHITESPACE.match(buffer, 0).end()  # type: ignore[union-attr]
        if pos >= len(buffer) or buffer[pos] not in "[{":
            yield f"{name}", RowError("invalid_json", "expected the file to hold one JSON array or object")
            return
        is_object = buffer[pos] == "{"
        pos += 1
        index = 0
        while True:
            # Skip separators; refill when the buffer runs dry.
            pos = _WHITESPACE.match(buffer, pos).end()  # type: ignore[union-attr]
            if pos >= len(buffer):
                buffer, pos = buffer[pos:], 0
                if not fill():
                    yield f"{name}", RowError("invalid_json", "file ends inside the top-level value")
                    return
                continue
            if buffer[pos] in "]}":
                return
            start = pos
            key = str(index)
            # Set when the item does not end inside the buffer: read more, or give up with this reason.
            unfinished: RowError | None = None
            try:
                if is_object:
                    key, pos = decoder.raw_decode(buffer, pos)
                    pos = _WHITESPACE.match(buffer, pos).end()  # type: ignore[union-attr]
                    if pos >= len(buffer) or buffer[pos] != ":":
                        raise ValueError("expected ':' after a key")
                    pos += 1
                    pos = _WHITESPACE.match(buffer, pos).end()  # type: ignore[union-attr]
                value, end = decoder.raw_decode(buffer, pos)
                # A value that ends exactly at the buffer's end may be cut short (a number).
                if end >= len(buffer) and not eof:
                    raise ValueError("value reaches the end of the buffer")
            except RecursionError:
                # Too deep for the parser, but its end can still be found without recursion:
                # quarantine this item alone and go on after it.
                end = value_end(buffer, pos)
                if end is None:
                    unfinished = RowError("json_too_deep", f"item {index} nests too deep and never ends")
                else:
                    yield f"{name}#{key}", RowError(
                        "json_too_deep", "the item nests arrays or objects deeper than the JSON parser allows")
                    pos = end
                    index += 1
                    continue
            except ValueError:
                unfinished = RowError("invalid_json", f"cannot parse the item after item {index}")
            if unfinished is not None:
                if eof or len(buffer) - start > MAX_ITEM_CHARS:
                    yield f"{name}#{key}", unfinished
                    return
                buffer, pos = buffer[start:], 0
                fill()
                continue
            ref = f"{name}#{key}"
            text = buffer[start:end]
            pos = end
            index += 1
            if len(buffer) > 4 * CHUNK_CHARS and pos > CHUNK_CHARS:
                buffer, pos = buffer[pos:], 0  # keep memory flat on huge files
            if _SURROGATE.search(text):
                yield ref, RowError("invalid_utf8", "the record holds bytes that are not UTF-8")
                continue
            if _ESCAPED_SURROGATE.search(text) and holds_lone_surrogate(value):
                yield ref, RowError("invalid_utf8", LONE_SURROGATE)
                continue
            yield ref, value


def value_end(text: str, pos: int) -> int | None:
    """The index just past the JSON array or object starting at ``text[pos]``, found with a loop
    (no recursion, so any depth); None when the text ends first. Strings are skipped with their
    escapes, so brackets inside them do not count. Only used to step over an item the parser
    refused for its depth."""
    depth = 0
    index = pos
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            index += 1
            while index < length and text[index] != '"':
                index += 2 if text[index] == "\\" else 1
            if index >= length:
                return None
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return index + 1
        elif depth == 0:
            return None  # not an array or object
        index += 1
    return None


def iter_datasets(path: str, *, name: str | None = None, split: str = "train",
                  data_files: Any = None, builder: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream a dataset through ``datasets`` (a Hub id, or a builder such as ``parquet`` on local
    files). Images are left undecoded (``{"bytes", "path"}``): they are hashed and checked by the
    source, and decoding every image here would cost time and memory for nothing."""
    import datasets

    if builder is not None:
        stream = datasets.load_dataset(builder, data_files=data_files, split=split, streaming=True)
    else:
        stream = datasets.load_dataset(path, name, data_files=data_files, split=split, streaming=True)
    stream = stream.decode(False)
    label = Path(path).name if builder is not None else path
    for number, record in enumerate(stream):
        yield f"{label}[{number}]", record
