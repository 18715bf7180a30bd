"""The viewer's HTTP server: the standard library's threading server and a small JSON API.

Routes (all GET)::

    /                       the page (static/index.html)
    /static/<file>          the page's script and style sheet (a fixed list, nothing else)
    /api/info               run label, state (finished / running / file), counts, index progress, filter values
    /api/samples            one page of samples: filters source, subset, status, tool, verdict, q; keyset ``after``
    /api/sample/<seq>       one sample: trace, boxes, images, RR and ORR; previous/next under the same filters
    /api/image/<seq>/<i>    the bytes of image i of sample seq (only images a stored row refers to)
    /api/dashboard          the dashboard's figures
    /api/paper              the run's figures beside the MMAT-1M paper's (as ``mmat stats --compare paper``)

The server binds to 127.0.0.1 unless told otherwise, answers only requests whose Host header names
it (a web page elsewhere cannot reach it through DNS rebinding), and sends a Content-Security-Policy
that forbids inline script, so data shown on the page can never run as code.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from mmat_plugins.viewer.catalog import Catalog, Filters, Indexer
from mmat_plugins.viewer.dataset import Dataset, image_bytes, sample_view

if TYPE_CHECKING:
    from mmat_core.plugins import PluginManager

_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "style.css": "text/css; charset=utf-8"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _static(name: str) -> bytes:
    return resources.files("mmat_plugins.viewer").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.viewer.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        """Route one request; any failure becomes a JSON error, never a dropped connection."""
        viewer = self.server.viewer
        if not viewer.host_allowed(self.headers.get("Host", "")):
            self._send_json({"error": "unknown Host header: open the address `mmat view` printed"}, HTTPStatus.FORBIDDEN)
            return
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        parts = [p for p in url.path.split("/") if p]
        try:
            if not parts:
                self._send(_static("index.html"), _STATIC["index.html"])
            elif parts[0] == "static" and len(parts) == 2 and parts[1] in _STATIC:
                self._send(_static(parts[1]), _STATIC[parts[1]])
            elif parts == ["favicon.ico"]:
                self._send(b"", "image/x-icon", status=HTTPStatus.NO_CONTENT)
            elif parts == ["api", "info"]:
                self._send_json(viewer.info())
            elif parts == ["api", "samples"]:
                self._send_json(viewer.catalog.page(Filters.from_query(query), _int(query.get("after"), 0), _int(query.get("limit"), 50)))
            elif len(parts) == 3 and parts[:2] == ["api", "sample"] and parts[2].isdigit():
                view = sample_view(viewer.dataset, int(parts[2]))
                if view is None:
                    self._send_json({"error": f"no sample with seq {parts[2]}"}, HTTPStatus.NOT_FOUND)
                    return
                view["neighbours"] = viewer.catalog.neighbours(int(parts[2]), Filters.from_query(query))
                self._send_json(view)
            elif len(parts) == 4 and parts[:2] == ["api", "image"] and parts[2].isdigit() and parts[3].isdigit():
                found = image_bytes(viewer.dataset, int(parts[2]), int(parts[3]))
                if found is None:
                    self._send_json({"error": "no such image, or its file is gone or changed"}, HTTPStatus.NOT_FOUND)
                else:
                    self._send(found[0], found[1], cache=True)
            elif parts == ["api", "dashboard"]:
                self._send_json(viewer.catalog.dashboard())
            elif parts == ["api", "paper"]:
                self._send_json(viewer.catalog.paper_comparison())
            else:
                self._send_json({"error": f"no route {url.path}"}, HTTPStatus.NOT_FOUND)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (e.g. a page change cancelled an image)
        except Exception as exc:  # noqa: BLE001 - one bad row must not take the viewer down
            self._send_json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _send_json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(value, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8", status=status)

    def _send(self, body: bytes, content_type: str, *, status: HTTPStatus = HTTPStatus.OK, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return default


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    viewer: ViewerServer


class ViewerServer:
    """A dataset, its catalog, the indexing thread and the HTTP server, started and stopped together."""

    def __init__(self, dataset: Dataset, catalog: Catalog, *, host: str = "127.0.0.1", port: int = 0,
                 verbose: bool = False, poll_s: float = 1.0) -> None:
        self.dataset = dataset
        self.catalog = catalog
        self.verbose = verbose
        self.indexer = Indexer(catalog, poll_s=poll_s)
        self.httpd = _HTTPServer((host, port), _Handler)
        self.httpd.viewer = self
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, target: Path, *, host: str = "127.0.0.1", port: int = 0, index_dir: Path | None = None,
             image_roots: list[Path] | None = None,
             verbose: bool = False, plugins: PluginManager | None = None, poll_s: float = 1.0) -> ViewerServer:
        """Open a run directory or JSONL file and bind the server (not yet serving)."""
        dataset = Dataset.open(target, plugins, image_roots)
        try:
            catalog = Catalog(dataset, index_dir)
            return cls(dataset, catalog, host=host, port=port, verbose=verbose, poll_s=poll_s)
        except BaseException:
            dataset.close()
            raise

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/"

    def host_allowed(self, header: str) -> bool:
        """Whether a request's Host header names this server (loopback names, or the bound host)."""
        name, _, port = header.rpartition(":") if header.count(":") == 1 or header.startswith("[") else (header, "", "")
        if port and port != str(self.port):
            return False
        name = name.strip("[]").lower()
        if name in {"127.0.0.1", "localhost", "::1", self.host}:
            return True
        if self.host in ("", "0.0.0.0", "::"):
            # Served on every interface: an address typed as digits, or this machine's own name, is
            # fine; any other name could be a DNS-rebinding page aiming at the viewer, so refuse it.
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return name in {socket.gethostname().lower(), socket.getfqdn().lower()}
        return False

    def info(self) -> dict[str, Any]:
        """What the page's header and filters need; polled to refresh a running run."""
        manifest = self.dataset.manifest()
        return {
            "label": self.dataset.label,
            "kind": self.dataset.kind,
            "complete": self.dataset.complete(),
            "state": "file" if self.dataset.kind == "jsonl" else ("finished" if self.dataset.complete() else "running"),
            "version": self.dataset.version() + f"/{self.catalog.indexed}",
            "index": self.catalog.progress() | {"error": self.indexer.error},
            "facets": self.catalog.facets(),
            "run": {k: manifest.get(k) for k in ("run_id", "started_at", "finished_at", "components", "timings_s", "counts")} if manifest else None,
        }

    def start(self) -> ViewerServer:
        """Index and serve in background threads (tests and notebooks)."""
        self.indexer.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mmat-view-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Index in the background and serve until interrupted (the CLI)."""
        self.indexer.start()
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def wait_indexed(self, timeout_s: float = 30.0) -> bool:
        """Block until the catalog has caught up with the store (tests, and the CLI's first page)."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.catalog.built and self.catalog.indexed >= self.catalog.total:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Stop serving and indexing; delete temporary files."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()
        if self.indexer.is_alive():
            self.indexer.stop()
        self.catalog.close()
        self.dataset.close()

    def __enter__(self) -> ViewerServer:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
