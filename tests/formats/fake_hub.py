"""A real HTTP server on 127.0.0.1 that answers the Hugging Face Hub endpoints a dataset push
uses (create a repository, validate a card, preupload, commit, list, repository info, download),
keeping the pushed files in memory. Parquet files go through the Git LFS batch API and a PUT (as
``datasets`` expects: it deletes its temporary shards once preuploaded), other files ride in the
commit. Point ``HF_ENDPOINT`` at ``server.url`` (before huggingface_hub and
datasets are imported: they read it once)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


class FakeHub:
    """The server and what was pushed: ``repos[repo_id][path] = bytes``."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.private: dict[str, bool] = {}
        self.commits: list[tuple[str, str]] = []
        self.unknown: list[str] = []
        self.lfs: dict[str, bytes] = {}
        #: Commit summaries the server answers with 500 (a Hub failing midway through a push).
        self.fail_commits: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self) -> None:
                path = unquote(urlparse(self.path).path)
                body = self._body()
                if path == "/api/repos/create":
                    request = json.loads(body)
                    repo = f"{request.get('organization') or 'user'}/{request['name']}" if "/" not in request["name"] else request["name"]
                    if repo in hub.repos:  # as the Hub: a conflict, which exist_ok accepts; visibility unchanged
                        return self._send(409, {"error": "You already created this dataset repo",
                                                "url": f"{hub.url}/datasets/{repo}"})
                    hub.repos[repo] = {}
                    hub.private[repo] = bool(request.get("private")) or request.get("visibility") == "private"
                    return self._send(200, {"url": f"{hub.url}/datasets/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    return self._send(200, {"warnings": []})
                if path.endswith(".git/info/lfs/objects/batch"):
                    request = json.loads(body)
                    objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True,
                                **({} if o["oid"] in hub.lfs else {"actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}}})}
                               for o in request["objects"]]
                    return self._send(200, {"transfer": "basic", "objects": objects})
                parts = path.split("/")
                if len(parts) >= 6 and parts[1] == "api" and parts[2] == "datasets" and parts[5] in ("preupload", "commit", "paths-info"):
                    repo, action = f"{parts[3]}/{parts[4]}", parts[5]
                    files = hub.repos.setdefault(repo, {})
                    if action == "preupload":
                        request = json.loads(body)
                        return self._send(200, {"files": [{"path": f["path"], "shouldIgnore": False,
                                                           "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular"}
                                                          for f in request["files"]], "commitOid": "0" * 40})
                    if action == "paths-info":
                        return self._send(200, [])
                    header = json.loads(body.splitlines()[0]) if body else {}
                    if header.get("key") == "header" and header["value"]["summary"] in hub.fail_commits:
                        return self._send(500, {"error": "Internal Error - We're working hard to fix this as soon as possible!"})
                    for line in body.splitlines():
                        item = json.loads(line)
                        if item["key"] == "header":
                            hub.commits.append((repo, item["value"]["summary"]))
                        elif item["key"] == "file":
                            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                        elif item["key"] == "lfsFile":
                            files[item["value"]["path"]] = hub.lfs[item["value"]["oid"]]
                        elif item["key"] == "deletedFile":
                            files.pop(item["value"]["path"], None)
                    oid = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
                    return self._send(200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{oid}", "commitOid": oid})
                hub.unknown.append(f"POST {self.path}")
                self._send(404, {"error": "not faked"})

            def do_PUT(self) -> None:
                path = urlparse(self.path).path
                body = self._body()
                if path.startswith("/lfs-upload/"):
                    oid = path.rsplit("/", 1)[1]
                    if hashlib.sha256(body).hexdigest() != oid:
                        return self._send(400, {"error": "oid mismatch"})
                    hub.lfs[oid] = body
                    return self._send(200, {})
                hub.unknown.append(f"PUT {self.path}")
                self._send(404, {"error": "not faked"})

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                url = urlparse(self.path)
                path = unquote(url.path)
                parts = path.split("/")
                if len(parts) >= 6 and parts[1] == "api" and parts[2] == "datasets":
                    repo = f"{parts[3]}/{parts[4]}"
                    if repo not in hub.repos:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    files = hub.repos[repo]
                    sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
                    if parts[5] == "revision" or len(parts) == 5:
                        return self._send(200, {"id": repo, "sha": sha, "private": hub.private.get(repo, False),
                                                "siblings": [{"rfilename": p} for p in sorted(files)]})
                    if parts[5] == "tree":
                        prefix = "/".join(parts[7:]).strip("/") if len(parts) > 7 else ""
                        inside = {p: d for p, d in files.items() if not prefix or p.startswith(prefix + "/")}
                        if prefix and not inside:
                            return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                        recursive = "recursive=true" in url.query.lower() or "recursive=1" in url.query
                        entries: dict[str, dict[str, Any]] = {}
                        for name, data in inside.items():
                            rest = name[len(prefix) + 1:] if prefix else name
                            pieces = rest.split("/")
                            for depth in range(1, len(pieces)):
                                folder = "/".join(([prefix] if prefix else []) + pieces[:depth])
                                if recursive or depth == 1:
                                    entries[folder] = {"type": "directory", "path": folder, "size": 0,
                                                       "oid": hashlib.sha1(folder.encode()).hexdigest()}
                            if recursive or len(pieces) == 1:
                                entries[name] = {"type": "file", "path": name, "size": len(data),
                                                 "oid": hashlib.sha1(data).hexdigest()}
                        return self._send(200, [entries[k] for k in sorted(entries)])
                if len(parts) >= 5 and parts[1] == "api" and parts[2] == "datasets":
                    repo = f"{parts[3]}/{parts[4]}"
                    if repo in hub.repos:
                        files = hub.repos[repo]
                        sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
                        return self._send(200, {"id": repo, "sha": sha, "siblings": [{"rfilename": p} for p in sorted(files)]})
                if len(parts) >= 6 and parts[1] == "datasets" and parts[4] == "resolve":
                    repo, name = f"{parts[2]}/{parts[3]}", "/".join(parts[6:])
                    files = hub.repos.get(repo, {})
                    if name not in files:
                        return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                    data = files[name]
                    sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
                    return self._send(200, raw=data, headers={"ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                                                              "X-Repo-Commit": sha})
                hub.unknown.append(f"GET {self.path}")
                self._send(404, {"error": "not faked"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:  # noqa: PYI034 - final class in practice
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
