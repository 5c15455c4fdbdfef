"""An HTTP server with the Hugging Face Hub's file URL layout (/{repo}/resolve/{revision}/{path}).

It honours Range requests (for resumed downloads), can require a bearer token, can drop the
first response for a file half-way, the way a flaky link does, and can send at a bounded rate.
Every request is recorded with the headers that say who asked and how (`calls`), so tests can count
how often each file was served.
It also answers the API call `/api/models/{repo}/revision/{revision}[?blobs=true]` the way the Hub
does: the revision's commit sha and its files (with `?blobs=true`: size, blobId, and
`lfs: {sha256, size, pointerSize}` for the file types the Hub keeps in LFS). A branch's commit sha is
derived from its content, so changing a file moves the branch to a new commit while the old commit
stays readable.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.servers import serve_handler

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".onnx", ".whl")


@dataclass(frozen=True)
class HubCall:
    path: str
    range: str | None
    authorization: str | None
    user_agent: str | None


@dataclass
class HubState:
    files: dict[str, bytes] = field(default_factory=dict)  # "org/repo/revision/path" -> content
    token: str | None = None
    drop_first_response_for: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    calls: list[HubCall] = field(default_factory=list)
    #: Seconds each file response waits before its first byte (so concurrent requests really overlap).
    response_delay: float = 0.0
    #: Send file bodies at this rate (0: as fast as the socket takes them), like a slow link to the CDN.
    bytes_per_second: float = 0.0
    #: When set, a file body stalls after its first 64 KiB until this event is set (at most `hold_seconds`),
    #: like a slow CDN: a test can keep a download in flight until it has seen what must overlap it.
    hold: threading.Event | None = None
    hold_seconds: float = 60.0
    #: With `bytes_per_second`: one link shared by every response (its total is the rate), not a rate each.
    shared_link: bool = False
    _link_lock: threading.Lock = field(default_factory=threading.Lock)
    _link_free_at: float = 0.0

    def link_slot(self, size: int) -> float:
        """Reserve the shared link for `size` bytes; the monotonic time the bytes may go out by."""
        with self._link_lock:
            start = max(time.monotonic(), self._link_free_at)
            self._link_free_at = start + size / self.bytes_per_second
            return self._link_free_at

    def url_path(self, repo: str, path: str, revision: str = "main") -> str:
        return f"/{repo}/resolve/{revision}/{path}"

    def served(self, repo: str, path: str, revision: str = "main") -> list[HubCall]:
        """The requests made for one file so far."""
        wanted = self.url_path(repo, path, revision)
        return [call for call in self.calls if call.path == wanted]

    def add(self, repo: str, path: str, content: bytes, revision: str = "main") -> str:
        self.files[f"{repo}/{revision}/{path}"] = content
        return hashlib.sha256(content).hexdigest()

    def snapshot(self, repo: str, revision: str = "main") -> str | None:
        """The commit sha `revision` points to now; its files become readable under that sha too."""
        if len(revision) == 40 and any(key.startswith(f"{repo}/{revision}/") for key in self.files):
            return revision
        prefix = f"{repo}/{revision}/"
        files = {key[len(prefix):]: data for key, data in self.files.items() if key.startswith(prefix)}
        if not files:
            return None
        digest = hashlib.sha1(repo.encode())
        for path in sorted(files):
            digest.update(f"\0{path}\0{hashlib.sha256(files[path]).hexdigest()}".encode())
        sha = digest.hexdigest()
        for path, data in files.items():
            self.files.setdefault(f"{repo}/{sha}/{path}", data)
        return sha

    def model_info(self, repo: str, revision: str, blobs: bool) -> dict[str, object] | None:
        sha = self.snapshot(repo, revision)
        if sha is None:
            return None
        prefix = f"{repo}/{sha}/"
        siblings: list[dict[str, object]] = []
        for key in sorted(k for k in self.files if k.startswith(prefix)):
            path, data = key[len(prefix):], self.files[key]
            sibling: dict[str, object] = {"rfilename": path}
            if blobs:
                sibling["size"] = len(data)
                sibling["blobId"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                if path.endswith(LFS_SUFFIXES):
                    sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                      "pointerSize": 134}
            siblings.append(sibling)
        return {"_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo, "sha": sha,
                "private": False, "siblings": siblings}


def _handler(state: HubState) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            state.calls.append(HubCall(self.path, self.headers.get("Range"), self.headers.get("Authorization"),
                                       self.headers.get("User-Agent")))
            if self.path.startswith("/api/"):
                return self._api()
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
            if state.response_delay:
                time.sleep(state.response_delay)
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
            self._send_body(body)

        def _send_body(self, body: bytes) -> None:
            rate = state.bytes_per_second  # as it was when the response began
            piece = 64 * 1024
            if state.hold is not None:
                try:
                    self.wfile.write(body[:piece])
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                state.hold.wait(state.hold_seconds)
                body = body[piece:]
            if not rate:
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                return
            try:
                for start in range(0, len(body), piece):
                    self.wfile.write(body[start:start + piece])
                    self.wfile.flush()
                    if state.shared_link:
                        time.sleep(max(0.0, state.link_slot(piece) - time.monotonic()))
                    else:
                        time.sleep(piece / rate)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away mid-body (it was killed)

        def _api(self) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/")]
            # ['', 'api', 'models', org, name, 'revision', rev]
            if len(parts) != 7 or parts[1:3] != ["api", "models"] or parts[5] != "revision":
                return self._json(404, {"error": "Not Found"})
            if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
                return self._json(401, {"error": "Invalid credentials in Authorization header"})
            blobs = parse_qs(url.query).get("blobs", ["false"])[0].lower() in ("1", "true")
            info = state.model_info(f"{parts[3]}/{parts[4]}", parts[6], blobs)
            if info is None:
                return self._json(404, {"error": f"Invalid rev id: {parts[6]}"})
            return self._json(200, info)

        def _json(self, code: int, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _status(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def serve_hub(state: HubState) -> Iterator[str]:
    """Yields the endpoint URL (what HF_ENDPOINT would be set to)."""
    with serve_handler(_handler(state)) as endpoint:
        yield endpoint
