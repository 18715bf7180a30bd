"""Image URLs are fetched from public http/https addresses only, with a size limit and a timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmat_core.fetch import FetchError, FetchPolicy, fetch_url, is_public


class Handler(BaseHTTPRequestHandler):
    """/ok: a small body; /big: 2 MB; /slow: answers after 3 s; /metadata: redirects to cloud metadata."""

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        body = b"x" * (2 * 1024 * 1024) if self.path == "/big" else b"\x89PNG fake"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def local_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


TRUST_LOOPBACK = FetchPolicy(allowed_networks=["127.0.0.0/8"], max_bytes=1024 * 1024, timeout_s=1)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.png", "http://localhost/x.png", "http://[::1]/x.png", "http://10.0.0.8/x.png",
    "http://192.168.1.1/x.png", "http://172.16.0.1/x.png", "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/x.png", "http://0.0.0.0/x.png", "http://100.64.0.1/x.png", "http://[::ffff:127.0.0.1]/x.png",
])
def test_loopback_private_and_link_local_addresses_are_refused(url: str) -> None:
    with pytest.raises(FetchError) as error:
        fetch_url(url)
    assert error.value.reason == "url_address_refused"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.png", "gopher://x/", "data:image/png;base64,AAAA",
                                 "javascript:alert(1)"])
def test_schemes_other_than_http_and_https_are_refused(url: str) -> None:
    with pytest.raises(FetchError) as error:
        fetch_url(url)
    assert error.value.reason == "url_scheme_refused"


def test_public_addresses_count_as_public() -> None:
    assert is_public("93.184.216.34") and is_public("2606:2800:220:1::1")
    assert not is_public("127.0.0.2") and not is_public("fd00::1")


def test_a_trusted_network_is_fetched(local_server: str) -> None:
    assert fetch_url(f"{local_server}/ok", TRUST_LOOPBACK) == b"\x89PNG fake"


def test_a_body_over_the_size_limit_is_refused(local_server: str) -> None:
    with pytest.raises(FetchError) as error:
        fetch_url(f"{local_server}/big", TRUST_LOOPBACK)
    assert error.value.reason == "url_too_large"


def test_a_server_that_does_not_answer_in_time_is_abandoned(local_server: str) -> None:
    with pytest.raises(FetchError) as error:
        fetch_url(f"{local_server}/slow", TRUST_LOOPBACK)
    assert error.value.reason == "url_timeout"


def test_a_redirect_to_a_refused_address_is_refused(local_server: str) -> None:
    with pytest.raises(FetchError) as error:
        fetch_url(f"{local_server}/metadata", TRUST_LOOPBACK)
    assert error.value.reason == "url_address_refused" and "169.254.169.254" in error.value.detail


@pytest.mark.parametrize("address", ["64:ff9b::a00:1", "2002:c0a8:101::1", "::ffff:127.0.0.1", "fd00::1", "100.64.0.1"])
def test_ipv6_forms_of_private_addresses_are_refused(address: str) -> None:
    from mmat_core.fetch import is_public

    assert not is_public(address)


def test_public_addresses_are_allowed() -> None:
    from mmat_core.fetch import is_public

    assert is_public("8.8.8.8") and is_public("2606:4700:4700::1111") and is_public("64:ff9b::808:808")


class DripServer:
    """A real TCP server on 127.0.0.1 that answers every request one byte every 0.2 s, for ever:
    the headers (``part="headers"``) or, after complete headers, the body (``part="body"``)."""

    def __init__(self, part: str) -> None:
        import socket

        self.part = part
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/drip.png"
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: object) -> None:
        import socket

        assert isinstance(connection, socket.socket)
        with connection:
            connection.recv(65536)
            if self.part == "body":
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            header = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 100000
            while not self.stopped.is_set():
                try:
                    connection.sendall(header[:1] if self.part == "headers" else b"x")
                except OSError:
                    return
                header = header[1:] or b"a"
                self.stopped.wait(0.2)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.mark.parametrize("part", ["headers", "body"])
def test_a_server_dripping_bytes_is_abandoned_at_the_one_deadline(part: str) -> None:
    server = DripServer(part)
    policy = FetchPolicy(allowed_networks=["127.0.0.0/8"], timeout_s=1)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError) as error:
            fetch_url(server.url, policy)
    finally:
        server.close()
    assert error.value.reason == "url_timeout"
    assert time.monotonic() - started < 4 * policy.timeout_s  # generous: it finished, it did not drip on
