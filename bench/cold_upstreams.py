"""Stand-in upstreams for the cold-apply bench: one HTTP server on 127.0.0.1 behind one shared throttle.

It serves a PEP 503 index over a wheel cache (`/simple/<project>/`, files under `/files/`, each wheel's
METADATA beside it as PyPI serves it: PEP 714's `data-core-metadata` on the link, the file at
`<wheel URL>.metadata`; uv reads it instead of the wheel) and the Hugging
Face Hub's layout over a directory of model files (`/hf/{org}/{repo}/resolve/{revision}/{path}`, with HEAD
answered the way the Hub does for LFS files, Range requests and `/hf/api/models/{org}/{repo}/revision/{rev}`).
Every response body draws from one token bucket, so all transfers together share the stated bandwidth, as
they would on the host's one link. The git mirrors are built here too (served over file://, unthrottled).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from tests.support.servers import serve_handler

CHUNK = 256 * 1024
ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip")


class Throttle:
    """One link of `rate` bytes/s shared by every response: each chunk books the next free slot of it."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait_for(self, size: int) -> None:
        with self._lock:
            start = max(time.monotonic(), self._next)
            self._next = start + size / self.rate
            done = self._next
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass(frozen=True)
class HubFile:
    repo: str
    path: str
    size: int
    sha256: str


@dataclass
class Upstreams:
    wheels: Path
    models: Path  # models/{org}/{repo}/{path}
    hub_files: list[HubFile]
    throttle: Throttle
    served_bytes: int = 0
    archives: dict[str, int] = field(default_factory=dict)  # each wheel or sdist fetched, by name: its size

    def count(self, size: int) -> None:
        self.served_bytes += size  # one writer per chunk under the GIL; close enough for a byte count


def project_of(filename: str) -> str:
    name = filename.split("-")[0] if filename.endswith(".whl") else filename.rsplit("-", 1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _handler(up: Upstreams) -> type[http.server.BaseHTTPRequestHandler]:
    repo_commit = {f.repo: hashlib.sha1(f.repo.encode()).hexdigest() for f in up.hub_files}
    by_key = {(f.repo, f.path): f for f in up.hub_files}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        def _route(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if path.startswith("/simple/"):
                return self._index(path[len("/simple/"):].strip("/"))
            if path.startswith("/files/"):
                name = path[len("/files/"):]
                if name.endswith(".whl.metadata") and "/" not in name and (up.wheels / name[:-9]).is_file():
                    return self._file(wheel_metadata(up.wheels / name[:-9]), head, {})
                if "/" in name or not name.endswith(ARCHIVE_SUFFIXES):
                    return self._status(404)
                if not head and (up.wheels / name).is_file():
                    up.archives.setdefault(name, (up.wheels / name).stat().st_size)
                return self._file(up.wheels / name, head, {})
            if path.startswith("/hf/api/models/"):
                return self._api(path[len("/hf/api/models/"):])
            if path.startswith("/hf/"):
                return self._hub(path[len("/hf/"):], head)
            return self._status(404)

        def _index(self, project: str) -> None:
            if not project:
                names = sorted({project_of(p.name) for p in up.wheels.iterdir() if p.name.endswith(ARCHIVE_SUFFIXES)})
                body = "".join(f'<a href="{n}/">{n}</a><br/>' for n in names)
            else:
                wanted = re.sub(r"[-_.]+", "-", project).lower()
                files = sorted(p for p in up.wheels.iterdir()
                               if p.name.endswith(ARCHIVE_SUFFIXES) and project_of(p.name) == wanted)
                if not files:
                    return self._status(404)
                body = "".join(f'<a href="/files/{quote(p.name)}#sha256={file_sha256(p)}"{_metadata_attrs(p)}>'
                               f'{p.name}</a><br/>' for p in files)
            data = f"<!DOCTYPE html><html><body>{body}</body></html>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _hub(self, rest: str, head: bool) -> None:
            parts = rest.split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._status(404)
            repo, path = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
            hub_file = by_key.get((repo, path))
            if hub_file is None or ".." in parts:
                return self._status(404, {"X-Error-Code": "EntryNotFound"})
            headers = {"X-Repo-Commit": repo_commit[repo], "ETag": f'"{hub_file.sha256}"',
                       "X-Linked-Etag": f'"{hub_file.sha256}"', "X-Linked-Size": str(hub_file.size),
                       "Accept-Ranges": "bytes"}
            return self._file(up.models / repo / path, head, headers)

        def _api(self, rest: str) -> None:
            parts = rest.split("/")  # org, name, 'revision', rev
            if len(parts) != 4 or parts[2] != "revision":
                return self._json(404, {"error": "Not Found"})
            repo = f"{parts[0]}/{parts[1]}"
            files = [f for f in up.hub_files if f.repo == repo]
            if not files:
                return self._json(404, {"error": "Repository not found"})
            siblings = [{"rfilename": f.path, "size": f.size, "blobId": hashlib.sha1(f.sha256.encode()).hexdigest(),
                         "lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}} for f in files]
            return self._json(200, {"_id": repo_commit[repo][:24], "id": repo, "modelId": repo,
                                    "sha": repo_commit[repo], "private": False, "siblings": siblings})

        def _file(self, path: Path, head: bool, headers: dict[str, str]) -> None:
            try:
                size = path.stat().st_size
            except OSError:
                return self._status(404)
            start, end = 0, size - 1
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                first, _, last = ranged[6:].split(",")[0].strip().partition("-")
                if first:  # bytes=START- or bytes=START-END
                    start, end = int(first), min(int(last), size - 1) if last else size - 1
                else:  # bytes=-N: the last N bytes
                    start = max(0, size - int(last or 0))
                if start >= size and size:
                    return self._status(416, {"Content-Range": f"bytes */{size}"})
            partial = (start, end) != (0, size - 1)
            self.send_response(206 if partial else 200)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Content-Type", "application/octet-stream")
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if head:
                return
            try:
                with path.open("rb") as source:
                    source.seek(start)
                    left = end - start + 1
                    while left > 0 and (piece := source.read(min(CHUNK, left))):
                        left -= len(piece)
                        up.throttle.wait_for(len(piece))
                        self.wfile.write(piece)
                        up.count(len(piece))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _json(self, code: int, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _status(self, code: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def serve(up: Upstreams) -> Iterator[str]:
    """Yields the base URL; the index is {base}/simple, the Hub endpoint {base}/hf."""
    with serve_handler(_handler(up)) as base:
        yield base


# -- content, made once into the cache -----------------------------------------------------------------------

_SHA_CACHE: dict[Path, str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered beside it (`.sha256`) keyed by size and mtime."""
    if path in _SHA_CACHE:
        return _SHA_CACHE[path]
    stat = path.stat()
    memo = path.with_name(path.name + ".sha256")
    key = f"{stat.st_size} {stat.st_mtime_ns}"
    if memo.exists() and memo.read_text().startswith(key + " "):
        digest = memo.read_text().split()[-1]
    else:
        hasher = hashlib.sha256()
        with path.open("rb") as source:
            while piece := source.read(4 << 20):
                hasher.update(piece)
        digest = hasher.hexdigest()
        memo.write_text(f"{key} {digest}\n")
    _SHA_CACHE[path] = digest
    return digest


def wheel_metadata(wheel: Path) -> Path:
    """The wheel's `*.dist-info/METADATA`, extracted once beside it as `<wheel>.metadata` (PEP 658)."""
    target = wheel.with_name(wheel.name + ".metadata")
    if not target.exists() or target.stat().st_mtime_ns < wheel.stat().st_mtime_ns:
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
            staged = target.with_name(target.name + ".part")
            staged.write_bytes(archive.read(name))
            staged.replace(target)
    return target


def _metadata_attrs(archive: Path) -> str:
    if not archive.name.endswith(".whl"):
        return ""  # PyPI serves METADATA for wheels only
    digest = file_sha256(wheel_metadata(archive))
    # Only PEP 714's name, as pypi.org: pip 23.0.1 reads the older `data-dist-info-metadata` and then refuses
    # typing_extensions' METADATA ("inconsistent Name"), which is why PEP 714 renamed the attribute.
    return f' data-core-metadata="sha256={digest}"'


def make_model_file(path: Path, size: int) -> str:
    """A sparse file of `size` zero bytes (served as real bytes; costs no disk here); returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.stat().st_size != size:
        with path.open("wb") as out:
            out.truncate(size)
    return file_sha256(path)


def fill_wheels(wheels: Path, requirements: list[Path], extra: list[str], python: str) -> None:
    """Download every wheel (and sdist) the stack needs, once, with pip's ordinary client."""
    stamp = wheels / ".complete"
    wanted = "\n".join([*(p.read_text() for p in requirements), *extra])
    if stamp.exists() and stamp.read_text() == wanted:
        return
    wheels.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "pip", "download", "-q", "-d", str(wheels)]
    for req in requirements:
        argv += ["-r", str(req)]
    subprocess.run([*argv, *extra], check=True)
    stamp.write_text(wanted)


# -- git mirrors -----------------------------------------------------------------------------------------------

PLACEHOLDER_DATE = "2025-10-12T00:00:00+00:00"


def one_commit_mirror(snapshot: Path, commit: str, tag: str, dest: Path) -> str:
    """A bare repo with one root commit: `commit`'s tree with every blob missing from `snapshot` replaced by
    a one-line JSON placeholder (git cannot serve a tree that reaches a missing object). Returns its id."""
    if (dest / "HEAD").exists():
        return subprocess.run(["git", "-C", str(dest), "rev-parse", f"{tag}^{{commit}}"], check=True,
                              capture_output=True, text=True).stdout.strip()
    work = dest.with_name(dest.name + ".build")
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["git", "init", "-q", "--bare", str(work)], check=True)
    alternates = work / "objects" / "info" / "alternates"
    alternates.write_text(str(snapshot / "objects") + "\n")
    env = {**os.environ, "GIT_DIR": str(work), "GIT_INDEX_FILE": str(work / "index")}

    def git(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(["git", *args], env=env, input=stdin, capture_output=True, text=True,
                              check=True).stdout.strip()

    git("read-tree", commit)
    entries = [line.split("\t", 1) for line in git("ls-tree", "-r", commit).splitlines()]
    blobs = [(meta.split(), name) for meta, name in entries if meta.split()[1] == "blob"]
    checked = git("cat-file", "--batch-check", stdin="".join(f"{m[2]}\n" for m, _ in blobs)).splitlines()
    missing = [(meta, name) for (meta, name), answer in zip(blobs, checked, strict=True) if answer.endswith(" missing")]
    for (mode, _kind, blob), name in missing:
        text = json.dumps({"placeholder": True, "missing_blob": blob, "upstream_commit": commit}) + "\n"
        fresh = git("hash-object", "-w", "--stdin", stdin=text)
        git("update-index", "--cacheinfo", f"{mode},{fresh},{name}")
    tree = git("write-tree")
    stamp = {"GIT_AUTHOR_NAME": "mirror", "GIT_AUTHOR_EMAIL": "mirror@localhost", "GIT_COMMITTER_NAME": "mirror",
             "GIT_COMMITTER_EMAIL": "mirror@localhost", "GIT_AUTHOR_DATE": PLACEHOLDER_DATE,
             "GIT_COMMITTER_DATE": PLACEHOLDER_DATE}
    env.update(stamp)
    new = git("commit-tree", tree, "-m", f"ComfyUI {tag}: upstream {commit} with missing blobs as placeholders",
              stdin="")
    git("update-ref", "refs/heads/master", new)
    git("tag", tag, new)
    git("symbolic-ref", "HEAD", "refs/heads/master")
    # A clone over file:// packs only what the one commit reaches, so the mirror stands alone.
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--mirror", f"file://{work}", str(dest)], check=True)
    shutil.rmtree(work)
    return new


def full_mirror(snapshot: Path, dest: Path) -> None:
    if not (dest / "HEAD").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--mirror", str(snapshot), str(dest)], check=True)
