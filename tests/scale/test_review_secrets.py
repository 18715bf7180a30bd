"""The scrubber against forms a server may echo a credential in (a reviewer's attacks on
mmat_core/secrets.py): HTTP Basic credentials, whose base64 hides both the key and its shape."""

from __future__ import annotations

import base64

import pytest

from mmat_core.secrets import scrub

KEY = "sk-test-6a1f0c9e3b7d4e21a5c8f09b2d7e6c41-KNOWN-FAKE"


def basic(credentials: str) -> str:
    return base64.b64encode(credentials.encode()).decode()


@pytest.mark.parametrize("text", [
    f"401: bad header Authorization: Basic {basic('user:' + KEY)}",
    f'{{"error": "invalid credentials", "sent": "basic {basic("apikey:hunter2hunter2")}"}}',
    f"BASIC   {basic('admin:s3cret99')}",
], ids=["known-key", "unknown-password-in-json", "upper-case-and-spaces"])
def test_http_basic_credentials_are_scrubbed(text: str) -> None:
    cleaned = scrub(text)
    assert "***" in cleaned
    assert not any(part in cleaned for part in (basic("user:" + KEY), basic("apikey:hunter2hunter2"), basic("x:y")))


@pytest.mark.parametrize("text", ["a basic understanding of receipts", "Basic information: none",
                                  "basic " + basic("no colon in here at all")])
def test_the_word_basic_alone_is_left_alone(text: str) -> None:
    assert scrub(text) == text
