"""API keys come from the environment and never land in the run directory, the logs or the cache:
a build with a known fake key (real `openai` backend, real HTTP server on 127.0.0.1) leaves no trace of it,
not even a part of it, however the server or the model echoes it (mmat_core/secrets.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply
from tests.scale.conftest import run_mmat
from tests.scale.test_faults import ProtocolModel

KEY = "sk-test-6a1f0c9e3b7d4e21a5c8f09b2d7e6c41-KNOWN-FAKE"
#: Another provider's key that this process does not know: caught by its shape alone.
OTHER = "sk-proj-Zq81LmT0cVb3NxR5wYe7KuP2aGd9HjS4"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def write_config(tmp_path: Path, server: FakeOpenAIServer) -> Path:
    from PIL import Image

    image = tmp_path / "receipt.png"
    Image.new("RGB", (32, 24), "white").save(image)
    config = {"source": {"name": "generated", "count": 12, "image": str(image)},
              "llm": {"name": "openai", "model": "fake-vlm", "base_url": server.base_url},
              "llm_engine": {"max_attempts": 1, "progress": False},
              "tools": ["ocr"], "critics": ["answer_match"], "search": None}
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``secret``."""
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_known_key_is_nowhere_in_the_run_directory_logs_or_cache(server: FakeOpenAIServer, stub_env: dict[str, str],
                                                                     tmp_path: Path) -> None:
    server.responder = ProtocolModel(faults=False)
    out = tmp_path / "run"
    result = run_mmat("build", "-c", str(write_config(tmp_path, server)), "--out", str(out),
                      env={**stub_env, "OPENAI_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    sent = [v for r in server.requests for k, v in r.headers.items() if k.lower() == "authorization"]
    assert f"Bearer {KEY}" in sent  # the key really was used
    assert (out / "cache.sqlite").exists() and (out / "rr.jsonl").stat().st_size > 0
    assert files_holding(out, KEY) == []
    assert KEY not in result.stdout + result.stderr


def test_a_server_echoing_the_key_in_its_errors_does_not_leak_it(server: FakeOpenAIServer, stub_env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    def echo_key(request: RecordedRequest) -> Reply:
        auth = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        return Reply.status(401, f"invalid key {auth}")

    server.responder = echo_key
    out = tmp_path / "run"
    result = run_mmat("build", "-c", str(write_config(tmp_path, server)), "--out", str(out), "--min-yield", "0",
                      env={**stub_env, "OPENAI_API_KEY": KEY})
    assert result.returncode == 0, result.stderr  # every sample fails, the run completes
    assert files_holding(out, KEY) == []
    assert KEY not in result.stdout + result.stderr


def test_a_key_written_into_the_config_file_is_refused(server: FakeOpenAIServer, stub_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    path = write_config(tmp_path, server)
    config = yaml.safe_load(path.read_text())
    config["llm"]["api_key"] = KEY
    path.write_text(yaml.safe_dump(config))
    result = run_mmat("build", "-c", str(path), "--out", str(tmp_path / "run"), env=stub_env)
    assert result.returncode == 2 and "api_key" in result.stderr
    assert not (tmp_path / "run").exists() or files_holding(tmp_path / "run", KEY) == []


def fragments(secret: str, size: int = 12) -> list[str]:
    """Every run of ``size`` characters of ``secret``."""
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def leaks(root: Path, *texts: str) -> list[str]:
    """Each (file, fragment) where a 12-character part of KEY or OTHER is found in a file under
    ``root`` or in ``texts`` (the command's output)."""
    found = []
    blobs = [(str(p), p.read_bytes()) for p in root.rglob("*") if p.is_file()] + [(f"output {i}", t.encode())
                                                                                  for i, t in enumerate(texts)]
    for name, data in blobs:
        found += [f"{name}: {part}" for secret in (KEY, OTHER) for part in fragments(secret) if part.encode() in data]
    return found


class EchoingModel(ProtocolModel):
    """A protocol-following model whose thoughts quote the request's key minus its first and last
    characters, and another provider's key behind ``Bearer``."""

    def __call__(self, request: RecordedRequest) -> Reply:
        reply = super().__call__(request)
        auth = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        key = auth.removeprefix("Bearer ")
        try:
            step = json.loads(reply.text)
        except ValueError:
            return reply
        step["thought"] += f" I saw x-api-key: {key[1:]} then {key[:-1]} and Authorization: Bearer {OTHER}"
        return Reply.text(json.dumps(step))  # type: ignore[call-arg]


def test_a_model_quoting_the_key_or_another_providers_key_leaves_no_part_of_either(
        server: FakeOpenAIServer, stub_env: dict[str, str], tmp_path: Path) -> None:
    server.responder = EchoingModel(faults=False)
    out = tmp_path / "run"
    result = run_mmat("build", "-c", str(write_config(tmp_path, server)), "--out", str(out),
                      env={**stub_env, "OPENAI_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    thoughts = [json.loads(line) for line in (out / "rr.jsonl").read_text().splitlines()]
    assert thoughts and "***" in json.dumps(thoughts)  # the quote was there, scrubbed
    assert leaks(out, result.stdout, result.stderr) == []


def test_an_error_echoing_the_key_minus_a_character_leaves_no_part_of_it(
        server: FakeOpenAIServer, stub_env: dict[str, str], tmp_path: Path) -> None:
    def echo_key(request: RecordedRequest) -> Reply:
        auth = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
        return Reply.status(401, f"invalid key {auth[:-1]}; try {auth[8:]} or Bearer {OTHER}")

    server.responder = echo_key
    out = tmp_path / "run"
    result = run_mmat("build", "-c", str(write_config(tmp_path, server)), "--out", str(out), "--min-yield", "0",
                      env={**stub_env, "OPENAI_API_KEY": KEY})
    assert result.returncode == 0, result.stderr  # every sample fails, the run completes
    assert (out / "run.sqlite").exists()
    assert leaks(out, result.stdout, result.stderr) == []


@pytest.mark.parametrize(("text", "expected"), [
    (f"invalid key Bearer {KEY}", "invalid key Bearer ***"),
    (f"key {KEY[:-1]}.", "key ***."),                             # the key minus its last character
    (f"key {KEY[1:]}", "key ***"),                                # minus its first: no sk- left
    (f"part {KEY[9:30]} end", "part *** end"),                    # any long part of a known key
    (f'{{"error": "Bearer {OTHER}"}}', '{"error": "Bearer ***"}'),  # an unknown key, by its shape
    ("sk-ant-api03-Ab1Cd2Ef3Gh4Ij5Kl6Mn7", "***"),                 # Anthropic
    ("key=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv0", "key=***"),    # Google, in a URL
    ("X-Api-Key: abcdef123456", "X-Api-Key: ***"),
    ('{"api_key": "hunter2hunter2"}', '{"api_key": "***"}'),
    ("Ocp-Apim-Subscription-Key: 0123456789abcdef", "Ocp-Apim-Subscription-Key: ***"),
    ("https://h/s?q=cats&api_key=0123456789abcdef&num=3", "https://h/s?q=cats&api_key=***&num=3"),
    ("line one\\nsk-proj-Ab1Cd2Ef3Gh4Ij5Kl6Mn7", "line one\\n***"),  # after a JSON escape
    ("日本語 Bearer sk-xyzxyzxyzxyzxyzxyzxyz ü", "日本語 Bearer *** ü"),
])
def test_scrub_replaces_keys_their_parts_and_credential_shapes(text: str, expected: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mmat_core.secrets import scrub

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "Ask-questions-about-the-image-first", "task-1234567890abcdefgh", '"max_tokens": 1024, "prompt_tokens": 12',
    '"api_key_env": "OPENAI_API_KEY"', "a" * 64, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "The bearer of the flag stands left.", "Answer: B", "",
])
def test_scrub_leaves_ordinary_text_alone(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmat_core import secrets
    from mmat_core.secrets import scrub

    # Only this test's key is known: keys that earlier tests' backends remembered, or secret-named
    # variables they left set, would make the result depend on the order the suite runs in.
    monkeypatch.setattr(secrets, "_remembered", set())
    for name in [n for n in os.environ if secrets.is_secret_variable(n)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert scrub(text) == text


def test_a_key_read_from_a_variable_with_any_name_is_known() -> None:
    from mmat_core.secrets import known_secrets, remember

    remember("plain-named-variable-value-7f3e9a")
    assert "plain-named-variable-value-7f3e9a" in known_secrets()


def test_log_records_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from mmat_core.secrets import ScrubFilter

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    record = logging.LogRecord("mmat", logging.WARNING, __file__, 1, "retrying after %s", (f"401 {KEY[:-2]}",), None)
    ScrubFilter().filter(record)
    assert record.getMessage() == "retrying after 401 ***"


def test_a_key_right_after_a_word_ending_in_sk_is_still_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    # "task-" holds an "sk-" that is not a key; it must not hide the real key that follows it.
    from mmat_core import secrets

    monkeypatch.setattr(secrets, "_remembered", set())
    key = "sk-proj-" + "Zq8Lw3Xk9Rv2Nt7Hb4Jm1Pd6"
    assert key not in secrets.scrub(f"task-{key} failed")
