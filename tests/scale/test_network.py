"""No hidden network traffic: a build in which every connection outside 127.0.0.0/8 is refused
and recorded attempts none. The guard itself is checked first, so a silent record means something."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scale import netguard


@pytest.fixture
def guarded_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Environment whose Python processes start with the guard on, recording into a file."""
    import os

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("from tests.scale.netguard import install_from_env\ninstall_from_env()\n")
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


# ---- the system-call level -----------------------------------------------------------------------
# The guard above wraps Python's socket module; a native library (onnxruntime's telemetry, sent
# from C++ threads) goes around it. These tests watch the system calls themselves with strace,
# inside a network namespace when one can be made (so nothing could leave even if it tried).

_ADDRESS = re.compile(r'sa_family=AF_INET6?, (?:sin6?_port=htons\((\d+)\))?.*?(?:inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)")')


def _strace_prefix(log: Path) -> list[str] | None:
    """The command prefix that records network system calls into ``log`` (and isolates the
    network when possible), or None where strace is missing or cannot trace here."""
    import shutil

    if shutil.which("strace") is None:
        return None
    trace = ["strace", "-f", "-qq", "-o", str(log), "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-e", "signal=none"]
    if subprocess.run([*trace, "--seccomp-bpf", "true"], capture_output=True, timeout=60).returncode == 0:
        trace.insert(1, "--seccomp-bpf")  # only the traced calls stop the process: near full speed
    elif subprocess.run([*trace, "true"], capture_output=True, timeout=60).returncode != 0:
        return None  # ptrace is not allowed here
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=60).returncode == 0:
        return ["unshare", "-rn", *trace]
    return trace


def network_violations(log: Path) -> list[str]:
    """Traced calls that reach past loopback or look a name up: a connect or send to an IPv4 or
    IPv6 address outside loopback, anything to port 53 (DNS, loopback resolvers included), and a
    connection to the nscd or systemd-resolved sockets."""
    bad = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if "nscd" in line or "resolve/io.systemd" in line:
            bad.append(line)
            continue
        match = _ADDRESS.search(line)
        if not match:
            continue
        port, ipv4, ipv6 = match.groups()
        address = ipaddress.ip_address(ipv4 or ipv6)
        mapped = getattr(address, "ipv4_mapped", None)
        if port == "53" or not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
            bad.append(line)
    return bad


@pytest.fixture
def traced(tmp_path: Path) -> tuple[list[str], Path]:
    """(command prefix, strace log) or a skip naming what is missing."""
    log = tmp_path / "network.strace"
    prefix = _strace_prefix(log)
    if prefix is None:
        pytest.skip("strace is not installed or may not trace here (apt-get install strace; ptrace must be allowed): "
                    "the system-call check of hidden traffic cannot run")
    return prefix, log


def test_the_system_call_check_sees_a_native_connection_and_a_name_lookup(traced: tuple[list[str], Path]) -> None:
    prefix, log = traced
    code = ("import socket\n"
            "for target in (('203.0.113.9', 443), ('telemetry.example.com', 443)):\n"
            "    try:\n        socket.create_connection(target, timeout=0.5).close()\n"
            "    except OSError:\n        pass\n")
    subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, timeout=120, check=False)
    seen = "\n".join(network_violations(log))
    assert "203.0.113.9" in seen  # a connection outside loopback
    assert "htons(53)" in seen or "nscd" in seen  # and the name lookup


@pytest.mark.slow
def test_the_offline_build_with_ocr_makes_no_network_system_call(traced: tuple[list[str], Path], tmp_path: Path) -> None:
    import os

    prefix, log = traced
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    # The README's build: bundled sample, offline backend, real OCR (onnxruntime), faces, local search.
    result = subprocess.run([*prefix, sys.executable, "-m", "mmat_core", "build", "--out", str(tmp_path / "run")],
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert log.stat().st_size >= 0 and network_violations(log) == []


def test_the_ocr_tool_alone_makes_no_network_system_call(traced: tuple[list[str], Path], tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    prefix, log = traced
    image = tmp_path / "sign.png"
    picture = Image.new("RGB", (200, 60), "white")
    ImageDraw.Draw(picture).text((10, 20), "OPEN 24 HOURS", fill="black")
    picture.save(image)
    result = subprocess.run([*prefix, sys.executable, "-m", "mmat_core", "tool", "run", "ocr", str(image)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert network_violations(log) == []
