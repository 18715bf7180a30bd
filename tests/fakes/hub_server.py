"""A fake Hugging Face Hub on 127.0.0.1: ``/api/models/<id>`` answers 200 for the ids it holds, 404 else.

Point ``HF_ENDPOINT`` at it and the ``--model`` check (:func:`mmat_core.model_refs.check_model_source`)
asks it instead of huggingface.co; it records every requested path, so a test can assert that a
missing model cost exactly one request (no retries) or none at all::

    with FakeHub(models={"org/present"}) as hub:
        os.environ["HF_ENDPOINT"] = hub.endpoint
        ...
        assert hub.paths == ["/api/models/org/present"]

:func:`use_fake_hub` does that for a test (with pytest's ``monkeypatch``): the endpoint, an empty
Hub cache, online mode and no token.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self


class FakeHub:
    """The fake Hub server (see the module docstring); a context manager."""

    def __init__(self, models: Iterable[str] = ("org/present",)) -> None:
        self.models = set(models)
        #: Every path requested, in order.
        self.paths: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.paths.append(self.path)
                model = self.path.removeprefix("/api/models/")
                found = self.path.startswith("/api/models/") and model in hub.models
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"id": model} if found else {"error": "Repository not found"}).encode())

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    @property
    def endpoint(self) -> str:
        """The value for ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (an unreachable Hub)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def use_fake_hub(monkeypatch: Any, cache: Path, models: Iterable[str] = ("org/present",)) -> Iterator[FakeHub]:
    """A running :class:`FakeHub` as the Hub of this process: ``HF_ENDPOINT`` at it, ``HF_HUB_CACHE``
    at ``cache`` (empty), the offline switches and the token unset."""
    with FakeHub(models) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        yield hub
