"""No hidden network traffic: a build in which every connection outside 127.0.0.0/8 is refused
and recorded attempts none. The guard itself is checked first, so a silent record means something."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mmat_core import netguard


@pytest.fixture
def guarded_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment whose Python processes start with the guard on, recording into a file."""
    import os

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("from mmat_core.netguard import install_from_env\ninstall_from_env()\n")
    record = tmp_path / "attempts.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parents[2])]),
           netguard.ENV_VAR: str(record)}
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(name, None)  # prove mmat needs no offline switch to stay quiet
    return env, record


def attempts(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_guard_refuses_and_records_connections_outside_loopback() -> None:
    guard = netguard.install()
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("203.0.113.9", 443), timeout=1)
        with pytest.raises(ConnectionRefusedError):
            socket.getaddrinfo("telemetry.example.com", 443)
    finally:
        netguard.uninstall()
    assert [(a["kind"], a["target"]) for a in guard.attempts[-2:]] == [
        ("connect", "203.0.113.9:443"), ("dns", "telemetry.example.com")]


def test_guard_lets_loopback_through() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    guard = netguard.install()
    try:
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    finally:
        netguard.uninstall()
        server.close()
    assert guard.attempts == []


def test_guard_in_a_subprocess_records_what_it_refused(guarded_env: tuple[dict[str, str], Path]) -> None:
    env, record = guarded_env
    code = "import socket\ntry:\n    socket.create_connection(('198.51.100.7', 443), timeout=1)\nexcept ConnectionRefusedError:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert [a["target"] for a in attempts(record)] == ["198.51.100.7:443"]


@pytest.mark.slow
def test_default_build_attempts_no_connection_outside_loopback(guarded_env: tuple[dict[str, str], Path],
                                                               tmp_path: Path) -> None:
    env, record = guarded_env
    # The default build: bundled sample, offline backend, real OCR, faces, captions, local search, all critics.
    result = subprocess.run([sys.executable, "-m", "mmat_core", "build", "--out", str(tmp_path / "run")],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert attempts(record) == []
