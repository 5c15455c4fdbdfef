"""An HTTP server that speaks the Hugging Face Hub's protocol, as far as downloads and locking use it.

File URLs have the Hub's layout, `/{repo}/resolve/{revision}/{path}`, for GET and HEAD, with the headers
huggingface_hub's `get_hf_file_metadata` reads: `X-Repo-Commit` (without it huggingface_hub refuses the
endpoint), `ETag` (the git blob sha1 for files kept in git, the sha256 for LFS files, quoted) and, for
LFS files, a 302 to a signed CDN URL with `X-Linked-Etag` / `X-Linked-Size` naming the blob behind it.
The CDN path checks its signature (a client cannot skip the resolve step) and needs no token, like the
real one. Errors carry `X-Error-Code` the way the Hub sends them: `RepoNotFound` (401 without a token,
as the Hub answers for private, gated-without-login and missing repos alike), `GatedRepo` (403),
`RevisionNotFound` and `EntryNotFound` (404).

It honours Range requests (for resumed downloads), can require a bearer token, can drop the
first response for a file half-way, the way a flaky link does, and can send at a bounded rate.
Every request to the Hub's own routes is recorded with the headers that say who asked and how
(`calls`); requests to the CDN go to `cdn_calls`, so tests can count how often each file was asked for.
It also answers the API calls `/api/models/{repo}/revision/{revision}[?blobs=true]` (the revision's
commit sha and its files; with `?blobs=true`: size, blobId, and `lfs: {sha256, size, pointerSize}` for
the file types the Hub keeps in LFS) and `POST /api/models/{repo}/paths-info/{revision}`. A branch's
commit sha is derived from its content, so changing a file moves the branch to a new commit while the
old commit stays readable.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.support.servers import serve_handler

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".onnx", ".whl")
_CDN_KEY = b"stand-in cdn signing key"


@dataclass(frozen=True)
class HubCall:
    path: str
    range: str | None
    authorization: str | None
    user_agent: str | None
    method: str = "GET"


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubState:
    files: dict[str, bytes] = field(default_factory=dict)  # "org/repo/revision/path" -> content
    token: str | None = None
    #: Repos whose files need a token that has accepted their terms: any other caller gets GatedRepo.
    gated: set[str] = field(default_factory=set)
    drop_first_response_for: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    calls: list[HubCall] = field(default_factory=list)
    cdn_calls: list[HubCall] = field(default_factory=list)
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
    #: Leave out a header the Hub always sends (e.g. "X-Repo-Commit"), to see how a client copes.
    omit_headers: set[str] = field(default_factory=set)

    def url_path(self, repo: str, path: str, revision: str = "main") -> str:
        return f"/{repo}/resolve/{revision}/{path}"

    def served(self, repo: str, path: str, revision: str = "main") -> list[HubCall]:
        """The requests made for one file so far (GET and HEAD of its resolve URL)."""
        wanted = self.url_path(repo, path, revision)
        return [call for call in self.calls if call.path == wanted]

    def fetched(self, sha256: str) -> list[HubCall]:
        """The CDN requests for one LFS blob: how often its bytes were actually asked for."""
        return [call for call in self.cdn_calls if urlsplit(call.path).path == f"/cdn-lfs/{sha256}"]

    def add(self, repo: str, path: str, content: bytes, revision: str = "main") -> str:
        self.files[f"{repo}/{revision}/{path}"] = content
        return hashlib.sha256(content).hexdigest()

    def repo_exists(self, repo: str) -> bool:
        return any(key.startswith(f"{repo}/") for key in self.files)

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

    def blob(self, sha256: str) -> bytes | None:
        for data in self.files.values():
            if hashlib.sha256(data).hexdigest() == sha256:
                return data
        return None

    def _files_at(self, repo: str, sha: str) -> dict[str, bytes]:
        prefix = f"{repo}/{sha}/"
        return {key[len(prefix):]: data for key, data in sorted(self.files.items()) if key.startswith(prefix)}

    def model_info(self, repo: str, revision: str, blobs: bool) -> dict[str, object] | None:
        sha = self.snapshot(repo, revision)
        if sha is None:
            return None
        siblings: list[dict[str, object]] = []
        for path, data in self._files_at(repo, sha).items():
            sibling: dict[str, object] = {"rfilename": path}
            if blobs:
                sibling["size"] = len(data)
                sibling["blobId"] = git_blob_sha1(data)
                if is_lfs(path):
                    sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                      "pointerSize": 134}
            siblings.append(sibling)
        return {"_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "modelId": repo, "sha": sha,
                "private": False, "gated": repo in self.gated and "manual", "siblings": siblings}

    def paths_info(self, repo: str, revision: str, paths: list[str]) -> list[dict[str, object]] | None:
        sha = self.snapshot(repo, revision)
        if sha is None:
            return None
        files = self._files_at(repo, sha)
        entries: list[dict[str, object]] = []
        for path in paths:
            data = files.get(path)
            if data is None:
                continue  # the Hub leaves out paths it does not have
            entry: dict[str, object] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            if is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


def _signature(sha256: str) -> str:
    return hmac.new(_CDN_KEY, sha256.encode(), hashlib.sha256).hexdigest()[:32]


def _handler(state: HubState) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        def do_POST(self) -> None:
            self._record("POST")
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            parts = [unquote(p) for p in urlsplit(self.path).path.split("/")]
            # ['', 'api', 'models', org, name, 'paths-info', rev]
            if len(parts) != 7 or parts[1:3] != ["api", "models"] or parts[5] != "paths-info":
                return self._json(404, {"error": "Not Found"})
            repo = f"{parts[3]}/{parts[4]}"
            if not self._authorized(repo, api=True):
                return None
            entries = state.paths_info(repo, parts[6], form.get("paths", []))
            if entries is None:
                return self._revision_missing(repo, parts[6])
            return self._json(200, entries)

        def _record(self, method: str) -> None:
            call = HubCall(self.path, self.headers.get("Range"), self.headers.get("Authorization"),
                           self.headers.get("User-Agent"), method)
            if self.path.startswith("/cdn-lfs/"):
                state.cdn_calls.append(call)
                return
            state.calls.append(call)
            if method == "GET":
                state.requests.append((self.path, self.headers.get("Range")))

        def _route(self, head: bool) -> None:
            self._record("HEAD" if head else "GET")
            if self.path.startswith("/cdn-lfs/"):
                return self._cdn(head)
            if self.path.startswith("/api/"):
                return self._api()
            parts = [unquote(p) for p in urlsplit(self.path).path.lstrip("/").split("/")]
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, "RepoNotFound", "Repository not found")
            repo, revision, path = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
            if not self._authorized(repo):
                return None
            sha = state.snapshot(repo, revision)
            if sha is None:
                return self._revision_missing(repo, revision)
            content = state.files.get(f"{repo}/{sha}/{path}")
            if content is None:
                return self._error(404, "EntryNotFound", f"Entry not found: {path}", commit=sha)
            headers = {"X-Repo-Commit": sha}
            if is_lfs(path):
                digest = hashlib.sha256(content).hexdigest()
                # The CDN is another host, as on the Hub (where it is a signed URL on another domain), so
                # that clients drop the token on the redirect: localhost for a Hub reached as 127.0.0.1.
                host = self.headers.get("Host", "127.0.0.1").replace("127.0.0.1", "localhost", 1)
                headers.update({"ETag": f'"{git_blob_sha1(content)}"', "X-Linked-Etag": f'"{digest}"',
                                "X-Linked-Size": str(len(content)),
                                "Location": f"http://{host}/cdn-lfs/{digest}?sig={_signature(digest)}"})
                return self._send(302, headers, b"", head)
            headers["ETag"] = f'"{git_blob_sha1(content)}"'
            return self._file(f"{repo}/{revision}/{path}", content, headers, head)

        def _cdn(self, head: bool) -> None:
            url = urlsplit(self.path)
            digest = url.path.rsplit("/", 1)[-1]
            content = state.blob(digest)
            if content is None or parse_qs(url.query).get("sig") != [_signature(digest)]:
                return self._send(403, {"Content-Type": "application/xml"}, b"<Error>AccessDenied</Error>", head)
            key = next((k for k, v in state.files.items() if v == content and k in state.drop_first_response_for),
                       digest)
            return self._file(key, content, {"ETag": f'"{digest}"'}, head)

        def _file(self, key: str, content: bytes, headers: dict[str, str], head: bool) -> None:
            start = 0
            if self.headers.get("Range", "").startswith("bytes="):
                start = int(self.headers["Range"][6:].split("-")[0])
                if start >= len(content):
                    return self._send(416, {"Content-Range": f"bytes */{len(content)}"}, b"", head)
            body = content[start:]
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            if state.response_delay and not head:
                time.sleep(state.response_delay)
            headers["Accept-Ranges"] = "bytes"
            self._send(206 if start else 200, headers, body, head, length=len(body), stream=True)
            if head:
                return None
            if key in state.drop_first_response_for:
                state.drop_first_response_for.discard(key)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return None
            return self._send_body(body)

        def _send(self, code: int, headers: dict[str, str], body: bytes, head: bool,
                  length: int | None = None, stream: bool = False) -> None:
            self.send_response(code)
            for name, value in headers.items():
                if name not in state.omit_headers:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if not head and not stream:
                self.wfile.write(body)

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

        def _authorized(self, repo: str, api: bool = False) -> bool:
            """The Hub's answers to a missing or wrong token: 401 RepoNotFound, or 403 GatedRepo."""
            given = self.headers.get("Authorization")
            if given is not None and state.token and given != f"Bearer {state.token}":
                self._error(401, None, "Invalid credentials in Authorization header")
                return False
            if not state.repo_exists(repo):
                self._error(401 if given is None else 404, "RepoNotFound", "Repository not found")
                return False
            if state.token and given is None:
                self._error(401, "RepoNotFound", "Repository not found")  # the Hub hides what needs a login
                return False
            if repo in state.gated and given is None and not api:  # a gated repo's metadata is public
                self._error(403, "GatedRepo", f"Access to model {repo} is restricted. You must have access to it "
                            "and be authenticated to access it. Please log in.")
                return False
            return True

        def _revision_missing(self, repo: str, revision: str) -> None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")

        def _api(self) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/")]
            # ['', 'api', 'models', org, name, 'revision', rev]
            if len(parts) != 7 or parts[1:3] != ["api", "models"] or parts[5] != "revision":
                return self._json(404, {"error": "Not Found"})
            repo = f"{parts[3]}/{parts[4]}"
            if not self._authorized(repo, api=True):
                return None
            blobs = parse_qs(url.query).get("blobs", ["false"])[0].lower() in ("1", "true")
            info = state.model_info(repo, parts[6], blobs)
            if info is None:
                return self._revision_missing(repo, parts[6])
            return self._json(200, info)

        def _json(self, code: int, data: object, extra: dict[str, str] | None = None) -> None:
            body = json.dumps(data).encode()
            self._send(code, {"Content-Type": "application/json; charset=utf-8", **(extra or {})}, body,
                       self.command == "HEAD")

        def _error(self, code: int, error_code: str | None, message: str, commit: str | None = None) -> None:
            headers = {"X-Error-Message": message}
            if error_code:
                headers["X-Error-Code"] = error_code
            if commit:
                headers["X-Repo-Commit"] = commit
            self._json(code, {"error": message}, headers)

    return Handler


def resolve_url(endpoint: str, repo: str, path: str, revision: str = "main") -> str:
    return f"{endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"


@contextmanager
def serve_hub(state: HubState) -> Iterator[str]:
    """Yields the endpoint URL (what HF_ENDPOINT would be set to)."""
    with serve_handler(_handler(state)) as endpoint:
        yield endpoint
