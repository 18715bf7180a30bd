"""Fetching an image by URL, safely: http/https to public addresses only, bounded size and time.

A dataset row can carry an image URL written by anybody. Fetched naively it could make mmat read
cloud metadata (169.254.169.254), an admin page on the local network, a file (``file://``) or
stream gigabytes. :func:`fetch_url` refuses all of that:

- only ``http`` and ``https``;
- every address the host name resolves to must be public: loopback, private, link-local,
  multicast, reserved, unspecified and shared (CGNAT) ranges are refused, IPv4 and IPv6 alike;
- the connection goes to the address that was checked (the name is not looked up a second time,
  so a DNS answer cannot change between the check and the request), with the Host header and TLS
  server name of the original host;
- redirects are followed by hand, at most ``max_redirects``, each one checked again;
- the body is streamed and abandoned past ``max_bytes``; the whole fetch (look-ups, connects,
  headers, body, redirects) ends by one deadline, ``timeout_s`` after it starts, however slowly
  the server sends.

A refused or failed fetch raises :class:`FetchError` whose ``reason`` is the quarantine reason.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from mmat_core.errors import MmatError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)


class FetchError(MmatError, ValueError):
    """A URL that was refused or could not be fetched; ``reason`` is the quarantine reason."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass
class FetchPolicy:
    """Limits of :func:`fetch_url`."""

    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = 20.0
    max_redirects: int = 3
    #: Networks allowed although not public (an internal mirror the user trusts), e.g. ["10.1.2.0/24"].
    allowed_networks: list[str] = field(default_factory=list)


def is_public(address: str) -> bool:
    """Whether an IP address is a public unicast address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by it.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(str(embedded))
    return ip.is_global and not (ip.is_multicast or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED))


def _allowed(address: str, networks: Iterable[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


def check_url(url: str, policy: FetchPolicy | None = None) -> tuple[str, str, int, str]:
    """Validate ``url``; return (scheme, host, port, checked address). Raise FetchError."""
    policy = policy or FetchPolicy()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError("url_scheme_refused", f"{scheme or '(none)'}:// is not allowed; only http and https")
    host = parts.hostname
    if not host:
        raise FetchError("url_invalid", f"no host in {url!r}")
    if parts.username or parts.password:
        raise FetchError("url_invalid", "credentials in URLs are not allowed")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise FetchError("url_invalid", str(exc)) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError("url_unresolvable", f"{host}: {exc}") from None
    addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        if not is_public(address) and not _allowed(address, policy.allowed_networks):
            raise FetchError("url_address_refused", f"{host} resolves to {address}, which is not a public address")
    return scheme, host, port, addresses[0]


def _time_left(deadline: float, timeout: float | None, expired: type[Exception]) -> float:
    """Seconds one socket operation may wait: its own ``timeout`` cut to what is left before
    ``deadline``; once the deadline has passed, ``expired`` (an httpcore timeout) is raised."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the fetch deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """A network stream whose every read and write waits at most until one shared deadline.

    httpx and httpcore time out each socket operation separately, so a server sending its
    headers or body a byte at a time never trips them; giving each operation only the time left
    makes ``timeout_s`` the bound of the whole fetch.
    """

    def __init__(self, stream: Any, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        import httpcore

        return _time_left(self._deadline, timeout, httpcore.ReadTimeout)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> _DeadlineStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, self._left(timeout)), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend:
    """httpcore's socket backend with :class:`_DeadlineStream` streams (connect included)."""

    def __init__(self, deadline: float) -> None:
        import httpcore

        self._backend = httpcore.SyncBackend()
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        import httpcore

        return _time_left(self._deadline, timeout, httpcore.ConnectTimeout)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> _DeadlineStream:
        stream = self._backend.connect_tcp(host, port, self._left(timeout), local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise NotImplementedError("image URLs are fetched over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _resolve_by(url: str, policy: FetchPolicy, deadline: float) -> tuple[str, str, int, str]:
    """:func:`check_url` within the deadline: a name lookup that hangs is abandoned (the lookup
    thread is a daemon and ends on its own; the fetch does not wait for it)."""
    outcome: list[Any] = []
    worker = threading.Thread(target=lambda: outcome.append(_attempt(check_url, url, policy)), daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if not outcome:
        raise FetchError("url_timeout", f"no address for {url} within {policy.timeout_s:g}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _attempt(function: Any, *args: Any) -> tuple[bool, Any]:
    try:
        return True, function(*args)
    except Exception as exc:  # handed to the waiting thread, which raises it
        return False, exc


def fetch_url(url: str, policy: FetchPolicy | None = None) -> bytes:
    """The body of ``url`` under ``policy`` (see the module docstring). Raise FetchError.

    ``policy.timeout_s`` bounds the whole fetch (name lookups, connects, headers, body and
    redirects together), however slowly the server sends.
    """
    import httpcore

    policy = policy or FetchPolicy()
    current = url
    deadline = time.monotonic() + policy.timeout_s
    timeouts = {"connect": policy.timeout_s, "read": policy.timeout_s, "write": policy.timeout_s, "pool": policy.timeout_s}

    def timed_out() -> FetchError:
        return FetchError("url_timeout", f"no complete answer from {current} within {policy.timeout_s:g}s")

    with httpcore.ConnectionPool(network_backend=_DeadlineBackend(deadline), max_connections=1) as pool:
        for _ in range(policy.max_redirects + 1):
            scheme, host, port, address = _resolve_by(current, policy, deadline)
            parts = urlsplit(current)
            literal = f"[{address}]" if ":" in address else address
            pinned = urlunsplit((scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
            default_port = port == (443 if scheme == "https" else 80)
            headers = {"Host": host if default_port else f"{host}:{port}", "Accept": "image/*"}
            try:
                with pool.stream("GET", pinned, headers=headers,
                                 extensions={"sni_hostname": host, "timeout": timeouts}) as response:
                    fields = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
                    if response.status in (301, 302, 303, 307, 308):
                        location = fields.get("location")
                        if not location:
                            raise FetchError("url_http_error", f"redirect without Location from {current}")
                        current = urljoin(current, location)
                        continue
                    if response.status != 200:
                        raise FetchError("url_http_error", f"HTTP {response.status} from {current}")
                    declared = fields.get("content-length", "")
                    if declared.isdigit() and int(declared) > policy.max_bytes:
                        raise FetchError("url_too_large", f"{declared} bytes > {policy.max_bytes}")
                    body = bytearray()
                    for chunk in response.iter_stream():
                        body += chunk
                        if len(body) > policy.max_bytes:
                            raise FetchError("url_too_large", f"more than {policy.max_bytes} bytes")
                    return bytes(body)
            except httpcore.TimeoutException:
                raise timed_out() from None
            except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise timed_out() from None
                raise FetchError("url_http_error", f"{type(exc).__name__}: {exc}") from None
    raise FetchError("url_too_many_redirects", f"more than {policy.max_redirects} redirects from {url}")
