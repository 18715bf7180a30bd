"""Credentials are never stored or printed: the one scrubber every writer uses.

An API key can reach text in many ways: a server echoes it in an error body ("invalid key
Bearer sk-..."), a model repeats a header it saw, an exception prints a request. Replacing only
the exact key misses the key minus a character, a key cut at a line end, or another provider's
key. :func:`scrub` therefore replaces, with ``***``:

1. every **known secret** (the keys this process read: :func:`remember`, plus the values of
   environment variables whose names say they hold one: ``*_API_KEY``, ``*_TOKEN``,
   ``*_SECRET``, ``*_PASSWORD``, ...), whole or any part of it at least
   :data:`MIN_FRAGMENT` characters long;
2. everything **shaped like a credential** of the providers mmat talks to: ``sk-...`` (OpenAI,
   ``sk-proj-``, Anthropic ``sk-ant-``), Google ``AIza...``, Hugging Face ``hf_...``, GitHub
   ``ghp_...``, AWS ``AKIA...``, Slack ``xox?-...``, the value after ``Bearer``, HTTP Basic
   credentials (``Basic`` and base64 of ``user:secret``), and the value of a
   header, JSON key or URL parameter named like one (``x-api-key``, ``api_key``,
   ``Ocp-Apim-Subscription-Key``, ``X-Subscription-Token``, ``access_token``, ``password``, ``?key=``),
   and the password of a URL (``https://user:secret@host``, a ``base_url`` with credentials).

Writers call it on the text they are about to store (the run store's traces and quarantine
reasons, the cache's entries, ``run.json``), and the command line on what it prints (error lines
and log records, through :class:`ScrubFilter`). Each check starts with a plain substring test, so
text holding nothing credential-like (almost every trace) costs a few fast scans.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

REDACTED = "***"
#: A run of this many characters of a known secret is treated as the secret itself.
MIN_FRAGMENT = 10
#: Known secrets shorter than this are not replaced (they would match ordinary text).
MIN_SECRET = 6

# Not after a letter or digit ("task-...", "ask-..."), but after a JSON escape ("\nsk-...").
_START = rb"(?:(?<![a-z0-9])|(?<=\\[nrt]))"


def _value(group: str, least: int) -> bytes:
    """The value after a credential's name: quotes, ``:`` or ``=``, then ``least`` or more
    characters of the secret, captured as ``group``."""
    return rb"""(?:\\?["'])?\s*[:=]\s*(?:\\?["'])?(?P<%s>[^\s"'\\&,;}]{%d,})""" % (group.encode(), least)


def _after(literal: bytes, *names: bytes) -> bytes:
    """``literal`` when it ends one of ``names`` (fixed-width look-behinds after the literal, so
    the pattern starts with a literal and the regex engine scans for it quickly)."""
    return literal + b"(?:" + b"|".join(b"(?<=" + re.escape(name) + b")" for name in names) + b")"


# The patterns run on the ASCII-lower-cased UTF-8 bytes of the text, each from a literal the
# regex engine scans for. A scan of a 6 KB trace costs about 2 µs whatever the literal, so patterns
# that share a byte share one scan (look-behinds check what comes before it): ``sk-`` and the
# key and token names all hold a ``k``, ``bearer`` and ``basic`` start with ``b``. The named
# group that matched says which pattern it was and holds the secret.
_K_PATTERN = re.compile(
    rb"k(?:(?<=sk)(?P<sk>-[a-z0-9_\-]{16,})"  # OpenAI (sk-proj-...), Anthropic (sk-ant-...)
    + b"|" + _after(b"ey", b"x-api-key", b"api-key", b"api_key", b"apikey", b"subscription-key",
                    b"subscription_key") + _value("key", 6)
    + b"|" + _after(b"en", b"access_token", b"access-token", b"auth_token", b"auth-token", b"refresh_token",
                    b"refresh-token", b"id_token", b"id-token", b"subscription-token") + _value("token", 6)
    + b")"
)
_B_PATTERN = re.compile(rb"b(?:earer\s+(?P<bearer>[a-z0-9._~+/=\-]{8,})|asic\s+(?P<basic>[a-z0-9+/]{8,}={0,2}))")
#: Patterns with a scan of their own: (pattern, the group holding the secret or 0 for all).
_OTHER_PATTERNS: list[tuple[re.Pattern[bytes], int]] = [
    (re.compile(rb"hf_[a-z0-9]{30,}"), 0),  # Hugging Face tokens
    (re.compile(_after(b"secret", b"client_secret", b"client-secret", b"api_secret", b"api-secret")
                + _value("secret", 6)), 1),
    (re.compile(b"password" + _value("password", 4)), 1),
]
#: Google API keys; its ``z`` is rare in text, so a few byte searches for it usually spare the scan.
_GOOGLE = re.compile(rb"aiza[0-9a-z_\-]{30,}")
#: URL parameters named like a credential; ``=`` is found by a byte search far faster than a scan.
_URL_PARAMETER = re.compile(_after(b"=", *(mark + name + b"=" for mark in (b"?", b"&") for name in (
    b"key", b"api_key", b"api-key", b"apikey", b"token", b"access_token", b"access-token", b"auth")))
    + rb"([^&\s\"'#\\]{6,})")
#: The password of a URL's user part (``https://user:secret@host/v1``); searched only where the
#: text holds both ``://`` and ``@``.
_URL_USERINFO = re.compile(rb"://[^/\s:@\"'\\]+:([^/\s@\"'\\]{4,})@")
#: Searches for ``z`` before the Google pattern gives up and scans.
_RARE_BYTE_TRIES = 8

_SECRET_WORDS = {"KEY", "APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS"}
_remembered: set[str] = set()
_env_cache: tuple[int, tuple[str, ...]] = (-1, ())


def remember(secret: str | None) -> None:
    """Add a secret this process holds (a key read from a variable whose name does not say so)."""
    if secret and len(secret) >= MIN_SECRET:
        _remembered.add(secret)


def is_secret_variable(name: str) -> bool:
    """Whether an environment variable called ``name`` holds a credential (``OPENAI_API_KEY``,
    ``HF_TOKEN``, ``DB_PASSWORD``; not ``TOKENIZERS_PARALLELISM``, not ``..._KEY_ENV``)."""
    words = set(re.split(r"[^A-Za-z0-9]+", name.upper()))
    return bool(words & _SECRET_WORDS) and "ENV" not in words


def _plausible(value: str) -> bool:
    return len(value) >= MIN_SECRET and not value.isdigit() and value.lower() not in ("true", "false", "none", "null")


def _from_environment() -> tuple[str, ...]:
    # The names are scanned again only when the environment grows or shrinks; values are read
    # each time, so a key set after start-up (a test's monkeypatch) is still known.
    global _env_cache
    size, names = _env_cache
    if size != len(os.environ):
        names = tuple(sorted(n for n in os.environ if is_secret_variable(n)))
        _env_cache = (len(os.environ), names)
    values = (os.environ.get(name, "") for name in names)
    return tuple(v for v in values if _plausible(v))


def known_secrets() -> tuple[str, ...]:
    """Every secret :func:`scrub` replaces whole or in part, longest first."""
    return tuple(sorted(set(_from_environment()) | _remembered, key=len, reverse=True))


def _fragment_spans(data: bytes, secret: bytes) -> list[tuple[int, int]]:
    """Spans of ``data`` sharing at least MIN_FRAGMENT consecutive bytes with ``secret``.

    Any such run contains one of the secret's aligned pieces of MIN_FRAGMENT // 2 bytes, so only
    the pieces are searched (fast substring scans); each hit is then grown both ways while the
    data agrees with the secret.
    """
    if len(secret) < MIN_FRAGMENT:
        spans, start = [], data.find(secret)
        while start != -1:
            spans.append((start, start + len(secret)))
            start = data.find(secret, start + 1)
        return spans
    size = MIN_FRAGMENT // 2
    spans = []
    for offset in range(0, len(secret) - size + 1, size):
        piece = secret[offset:offset + size]
        start = data.find(piece)
        while start != -1:
            left, right, key_left, key_right = start, start + size, offset, offset + size
            while left > 0 and key_left > 0 and data[left - 1] == secret[key_left - 1]:
                left, key_left = left - 1, key_left - 1
            while right < len(data) and key_right < len(secret) and data[right] == secret[key_right]:
                right, key_right = right + 1, key_right + 1
            if right - left >= MIN_FRAGMENT:
                spans.append((left, right))
            start = data.find(piece, start + 1)
    return spans


def _replace_spans(data: bytes, spans: Iterable[tuple[int, int]]) -> bytes:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts, last = [], 0
    for start, end in merged:
        parts.append(data[last:start])
        parts.append(REDACTED.encode())
        last = end
    parts.append(data[last:])
    return b"".join(parts)


def _word_start(lowered: bytes, start: int) -> bool:
    """Whether a key shape found at ``start`` begins a word ("task-...", "ask-..." are words, not
    keys; a JSON escape before it, "\\nsk-...", is no letter)."""
    return start == 0 or not lowered[start - 1:start].isalnum() or lowered[max(0, start - 2):start] in (b"\\n", b"\\r", b"\\t")


def _rare_byte_absent(lowered: bytes, literal: bytes, index: int) -> bool:
    """Whether ``lowered`` surely lacks ``literal``: each of the first few places of its byte at
    ``index`` (a byte found by a fast byte search) is checked; after that many, say "maybe"."""
    anchor = literal[index:index + 1]
    found = lowered.find(anchor, index)
    for _ in range(_RARE_BYTE_TRIES):
        if found == -1:
            return True
        if lowered.startswith(literal, found - index):
            return False
        found = lowered.find(anchor, found + 1)
    return found == -1


def _overlapping(pattern: re.Pattern[bytes], lowered: bytes) -> Iterator[re.Match[bytes]]:
    """Every match of ``pattern``, each search starting one byte after the last match began, so a
    match of one merged pattern cannot hide another's inside it."""
    match = pattern.search(lowered)
    while match is not None:
        yield match
        match = pattern.search(lowered, match.start() + 1)


def _pattern_spans(data: bytes, lowered: bytes) -> list[tuple[int, int]]:
    spans = []
    for match in _overlapping(_K_PATTERN, lowered):
        if match.group("sk") is not None:
            start, end = match.start() - 1, match.end()  # the look-behind's "s" is the key's first byte
            if _word_start(lowered, start):
                spans.append((start, end))
        else:
            spans.append(match.span(match.lastgroup or 0))
    for match in _overlapping(_B_PATTERN, lowered):
        if match.group("bearer") is not None:
            spans.append(match.span("bearer"))
        elif _basic_credential(data, *match.span("basic")):
            spans.append(match.span("basic"))
    for pattern, group in _OTHER_PATTERNS:
        for match in pattern.finditer(lowered):
            start, end = match.span(group)
            if group == 0 and not _word_start(lowered, start):
                continue
            spans.append((start, end))
    if not _rare_byte_absent(lowered, b"aiza", 2):
        spans += (match.span() for match in _GOOGLE.finditer(lowered))
    if b"=" in lowered:
        spans += (match.span(1) for match in _URL_PARAMETER.finditer(lowered))
    if b"@" in lowered and b"://" in lowered:
        spans += (match.span(1) for match in _URL_USERINFO.finditer(lowered))
    return [(start, end) for start, end in spans if lowered[start:end] != REDACTED.encode()]


def _basic_credential(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]``, the value after ``Basic``, is an HTTP Basic credential (base64
    of ``user:secret``, a form the shape patterns cannot see and a server may echo). Only a value
    that decodes (in its own case) to text holding a ``:`` counts, so "basic understanding" stays."""
    import base64
    import binascii

    try:
        decoded = base64.b64decode(data[start:end], validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def scrub(text: str, *extra: str | None) -> str:
    """``text`` with every known secret (whole or a long part of it), every ``extra`` secret and
    everything shaped like a credential replaced by ``***``.

    The work is done on the UTF-8 bytes: ASCII lower-casing keeps every offset, and a multi-byte
    character never contains an ASCII byte, so replacing ASCII spans cannot split one.
    """
    if not text:
        return text
    data = text.encode("utf-8", "surrogatepass")
    secrets = [s for s in extra if s and len(s) >= 4] + list(known_secrets())
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        spans += _fragment_spans(data, secret.encode("utf-8", "surrogatepass"))
    lowered = data.lower()
    spans += _pattern_spans(data, lowered)
    if not spans:
        return text
    return _replace_spans(data, spans).decode("utf-8", "surrogatepass")


def scrub_data(data: Any) -> Any:
    """A copy of JSON-like ``data`` with :func:`scrub` applied to every string (keys included)."""
    if isinstance(data, str):
        return scrub(data)
    if isinstance(data, dict):
        return {scrub(k) if isinstance(k, str) else k: scrub_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [scrub_data(v) for v in data]
    return data


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs each record's final message (attach it to a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
