"""An HTTP server with the Hugging Face Hub's file URL layout (/{repo}/resolve/{revision}/{path}).

It honours Range requests (for resumed downloads), can require a bearer token, and can drop the
first response for a file half-way, the way a flaky link does.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class HubState:
    files: dict[str, bytes] = field(default_factory=dict)  # "org/repo/revision/path" -> content
    token: str | None = None
    drop_first_response_for: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def add(self, repo: str, path: str, content: bytes, revision: str = "main") -> str:
        self.files[f"{repo}/{revision}/{path}"] = content
        return hashlib.sha256(content).hexdigest()


def _handler(state: HubState) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            parts = self.path.lstrip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._status(404)
            key = "/".join([parts[0], parts[1], parts[3], *parts[4:]])
            if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
                return self._status(401)
            content = state.files.get(key)
            if content is None:
                return self._status(404)
            start = 0
            if self.headers.get("Range", "").startswith("bytes="):
                start = int(self.headers["Range"][6:].split("-")[0])
                if start >= len(content):
                    return self._status(416)
            body = content[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            self.end_headers()
            if key in state.drop_first_response_for:
                state.drop_first_response_for.discard(key)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def _status(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def serve_hub(state: HubState) -> Iterator[str]:
    """Yields the endpoint URL (what HF_ENDPOINT would be set to)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
