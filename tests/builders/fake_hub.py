"""Local HTTP servers standing in for the download sources (no network needed): Hugging Face's file-resolve protocol
(``FakeHub``) and plain file hosts such as insightface's GitHub release archive or MediaPipe's model storage
(``FakeFileServer``).

huggingface_hub's real ``hf_hub_download`` talks to it when ``HF_ENDPOINT`` points here: a HEAD request for the
metadata (commit, ETag, size), then a GET for the bytes. Every request is recorded so a test can prove that no
download was attempted.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from contextlib import contextmanager
from typing import Iterator

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo_id: str, files: dict[str, bytes], other_repos: dict[str, dict[str, bytes]] | None = None):
        self.repo_id = repo_id
        self.files = files
        self.repos = {repo_id: files, **(other_repos or {})}
        self.requests: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def file_requests(self) -> list[str]:
        return [r for r in self.requests if "/resolve/" in r]

    def _handler(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _lookup(self) -> bytes | None:
                hub.requests.append(f"{self.command} {self.path}")
                for repo, files in hub.repos.items():
                    prefix = f"/{repo}/resolve/main/"
                    if self.path.startswith(prefix):
                        return files.get(self.path[len(prefix):])
                return None

            def _headers(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def _respond(self, with_body: bool) -> None:
                data = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self._headers(data)
                if with_body:
                    self.wfile.write(data)

            def do_HEAD(self):  # noqa: N802 (http.server's naming)
                self._respond(with_body=False)

            def do_GET(self):  # noqa: N802
                self._respond(with_body=True)

            def log_message(self, *args):
                pass

        return Handler

    @contextmanager
    def running(self) -> Iterator["FakeHub"]:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()


class FakeFileServer:
    """Plain files by URL path, as a release page or a bucket serves them; ``redirects`` answer 302 to another path
    (GitHub sends release assets from another host), ``truncated`` paths announce their size but send half."""

    def __init__(self, files: dict[str, bytes], redirects: dict[str, str] | None = None,
                 truncated: tuple[str, ...] = ()):
        self.files, self.redirects, self.truncated = files, redirects or {}, truncated
        self.requests: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self):
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                host.requests.append(f"GET {self.path}")
                if self.path in host.redirects:
                    self.send_response(302)
                    self.send_header("Location", host.endpoint + host.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = host.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if self.path in host.truncated else data)

            def log_message(self, *args):
                pass

        return Handler

    @contextmanager
    def running(self) -> Iterator["FakeFileServer"]:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
