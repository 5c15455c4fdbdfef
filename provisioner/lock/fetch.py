"""HTTP(S) and file:// reads for locking: JSON documents and hashed downloads, standard library only."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from provisioner import __version__
from provisioner.agent.transfer import token_safe_opener
from provisioner.lock.errors import LockError

CHUNK = 1 << 20
TIMEOUT = 60.0
# urllib's own opener repeats the Authorization header to wherever a redirect points.
_opener = token_safe_opener()


class FetchError(LockError):
    """A URL could not be read; `status` is the HTTP status when there was one."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: {reason}")


def _open(url: str, token: str | None) -> IO[bytes]:
    if url.startswith("-"):
        raise FetchError(url, "not a URL")
    headers = {"User-Agent": f"provision/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        response: IO[bytes] = _opener.open(request, timeout=TIMEOUT)
        return response
    except urllib.error.HTTPError as exc:
        raise FetchError(url, f"HTTP {exc.code} {exc.reason}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(url, f"cannot connect: {reason}") from None


def fetch_json(url: str, token: str | None = None) -> Any:
    with _open(url, token) as response:
        body = response.read()
    try:
        return json.loads(body)
    except ValueError:
        raise FetchError(url, "the answer is not JSON") from None


def hash_url(url: str, token: str | None = None) -> tuple[str, int]:
    """sha256 and size of what `url` serves, streamed (nothing is kept)."""
    digest = hashlib.sha256()
    size = 0
    with _open(url, token) as response:
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def download(url: str, dest: Path, token: str | None = None) -> tuple[str, int]:
    """Save `url` to `dest` (temp file + rename) and return its sha256 and size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, _open(url, token) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size
