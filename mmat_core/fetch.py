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
- the body is streamed and abandoned past ``max_bytes``; the whole fetch has a ``timeout_s``.

A refused or failed fetch raises :class:`FetchError` whose ``reason`` is the quarantine reason.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)


class FetchError(ValueError):
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


def fetch_url(url: str, policy: FetchPolicy | None = None) -> bytes:
    """The body of ``url`` under ``policy`` (see the module docstring). Raise FetchError."""
    import httpx

    policy = policy or FetchPolicy()
    current = url
    deadline = time.monotonic() + policy.timeout_s  # for the whole fetch, redirects included
    with httpx.Client(timeout=policy.timeout_s, follow_redirects=False, trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            scheme, host, port, address = check_url(current, policy)
            parts = urlsplit(current)
            literal = f"[{address}]" if ":" in address else address
            pinned = urlunsplit((scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
            default_port = port == (443 if scheme == "https" else 80)
            headers = {"Host": host if default_port else f"{host}:{port}", "Accept": "image/*"}
            try:
                with client.stream("GET", pinned, headers=headers, extensions={"sni_hostname": host}) as response:
                    if response.is_redirect:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchError("url_http_error", f"redirect without Location from {current}")
                        current = urljoin(current, location)
                        continue
                    if response.status_code != 200:
                        raise FetchError("url_http_error", f"HTTP {response.status_code} from {current}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                        raise FetchError("url_too_large", f"{declared} bytes > {policy.max_bytes}")
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > policy.max_bytes:
                            raise FetchError("url_too_large", f"more than {policy.max_bytes} bytes")
                        # httpx's timeout is per read: a server dripping bytes would never trip it.
                        if time.monotonic() > deadline:
                            raise FetchError("url_timeout", f"no complete answer from {current} within {policy.timeout_s:g}s")
                    return bytes(body)
            except httpx.TimeoutException:
                raise FetchError("url_timeout", f"no complete answer from {current} within {policy.timeout_s:g}s") from None
            except httpx.HTTPError as exc:
                raise FetchError("url_http_error", f"{type(exc).__name__}: {exc}") from None
    raise FetchError("url_too_many_redirects", f"more than {policy.max_redirects} redirects from {url}")
