"""A guard against hidden network traffic: refuses and records connections outside loopback.

mmat connects only to endpoints the user configured. To check that (in tests, or when auditing
a run), :func:`install` wraps ``socket.socket.connect``/``connect_ex`` and ``socket.getaddrinfo``:
a connection to an address outside 127.0.0.0/8 and ::1, or a DNS lookup of a name that is not
a loopback name, is refused with ``ConnectionRefusedError`` and recorded (in memory, and as a
JSON line in ``record_file`` when given, so a subprocess can report to its parent).

The guard can be started in any Python process without code changes: put a ``sitecustomize.py``
that calls ``tests.scale.netguard.install_from_env()`` on ``PYTHONPATH`` (with the checkout's root)
and set ``MMAT_NETWORK_GUARD=/path/attempts.jsonl``. It lives with the tests that use it: mmat
itself never imports it (the telemetry switches mmat sets live in :mod:`mmat_core.telemetry`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
ENV_VAR = "MMAT_NETWORK_GUARD"


@dataclass
class NetworkGuard:
    """What the installed guard refused."""

    record_file: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse(self, kind: str, target: str) -> None:
        """Record an attempt and raise ConnectionRefusedError."""
        entry = {"kind": kind, "target": target, "pid": os.getpid(),
                 "stack": "".join(traceback.format_stack(limit=12)[:-2])}
        with self._lock:
            self.attempts.append(entry)
            if self.record_file:
                with open(self.record_file, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")
        raise ConnectionRefusedError(f"mmat network guard: {kind} to {target} refused (only loopback is allowed)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is loopback."""
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


_installed: NetworkGuard | None = None
_originals: dict[str, Any] = {}


def install(record_file: str | None = None) -> NetworkGuard:
    """Start guarding this process (idempotent); returns the guard with its record."""
    global _installed
    if _installed is not None:
        return _installed
    guard = NetworkGuard(record_file=record_file)
    _originals.update(connect=socket.socket.connect, connect_ex=socket.socket.connect_ex, getaddrinfo=socket.getaddrinfo)

    def target_of(address: Any) -> str | None:
        """The host of an AF_INET/AF_INET6 address, None for Unix sockets and the like."""
        if isinstance(address, tuple) and address and isinstance(address[0], str):
            return address[0]
        return None

    def connect(self: socket.socket, address: Any) -> Any:
        host = target_of(address) if self.family in (socket.AF_INET, socket.AF_INET6) else None
        if host is not None and not is_loopback(host):
            guard.refuse("connect", f"{host}:{address[1]}")
        return _originals["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        host = target_of(address) if self.family in (socket.AF_INET, socket.AF_INET6) else None
        if host is not None and not is_loopback(host):
            guard.refuse("connect", f"{host}:{address[1]}")
        return _originals["connect_ex"](self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        # An address literal needs no lookup (no traffic): its connect is what gets checked.
        if name is not None and not is_loopback(str(name)) and not _is_address(str(name)):
            guard.refuse("dns", str(name))
        return _originals["getaddrinfo"](host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    _installed = guard
    return guard


def uninstall() -> None:
    """Stop guarding (restores the original socket functions)."""
    global _installed
    if _installed is None:
        return
    socket.socket.connect = _originals["connect"]  # type: ignore[method-assign]
    socket.socket.connect_ex = _originals["connect_ex"]  # type: ignore[method-assign]
    socket.getaddrinfo = _originals["getaddrinfo"]  # type: ignore[assignment]
    _installed = None


def install_from_env() -> NetworkGuard | None:
    """Install the guard when ``MMAT_NETWORK_GUARD`` names a record file (for ``sitecustomize``)."""
    path = os.environ.get(ENV_VAR)
    return install(record_file=path) if path else None
