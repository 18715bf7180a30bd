"""API keys come from the environment and never land in the run directory, the logs or the cache:
a build with a known fake key (real `openai` backend, real HTTP server on 127.0.0.1) leaves no trace of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply
from tests.scale.conftest import run_mmat
from tests.scale.test_faults import ProtocolModel

KEY = "sk-test-6a1f0c9e3b7d4e21a5c8f09b2d7e6c41-KNOWN-FAKE"


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
    result = run_mmat("build", "-c", str(write_config(tmp_path, server)), "--out", str(out),
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
