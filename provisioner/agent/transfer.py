"""The one HTTP(S) Range/resume loop: the agent's downloads, the controller's download cache and the
lockfile's wheel downloads all go through it (stdlib only, since the agent runs it on the host).

It appends to a `.part` file, resumes with `Range` after a drop (bounded retries with backoff), starts
over when the server ignores the range, and hashes as it writes, so the finished file is not read again.
A redirect to another host (the Hub's CDN, or wherever a mirror points) does not carry the token along.
"""

from __future__ import annotations

import hashlib
import os
import time

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Tuple

CHUNK = 1 << 20
RETRIES = 4
TIMEOUT_SECONDS = 60.0


class TransferError(Exception):
    """The download failed for good; `status` is the HTTP status when the server refused it."""

    def __init__(self, message: str, status: Optional[int] = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def fetch(url: str, partial: str, token: Optional[str] = None, user_agent: str = "provision-agent",
          on_bytes: Optional[Callable[[int, Optional[int]], None]] = None, retries: int = RETRIES) -> str:
    """Download `url` into `partial` (resuming what is there) and return the sha256 of the whole file."""
    import urllib.error  # here, not at the top: only a download that fetches pays for the HTTP stack
    import urllib.request

    opener = token_safe_opener()
    digest, have = _hash_existing(partial)
    last_error = ""
    for attempt in range(retries):
        headers = {"User-Agent": user_agent}
        if have:
            headers["Range"] = "bytes=%d-" % have
        if token:
            headers["Authorization"] = "Bearer " + token
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_SECONDS) as response:
                if have and response.status != 206:
                    digest, have = hashlib.sha256(), 0  # the server ignored Range: start over
                length = response.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                have = _append(response, partial, have, total, digest, on_bytes)
            return str(digest.hexdigest())
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                return str(digest.hexdigest())  # already complete; the caller's sha256 check decides
            if exc.code in (401, 403, 404):
                raise TransferError("HTTP %s %s" % (exc.code, exc.reason), exc.code, str(exc.reason)) from None
            last_error = "HTTP %s %s" % (exc.code, exc.reason)
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(getattr(exc, "reason", exc))
        digest, have = _hash_existing(partial)  # what reached the disk before the drop
        if attempt + 1 < retries:
            time.sleep(min(2 ** attempt, 10) * 0.5)
    raise TransferError("failed after %d tries: %s" % (retries, last_error))


def _hash_existing(partial: str) -> Tuple[Any, int]:
    """sha256 state and length of what `partial` holds (nothing, when it is not there)."""
    digest = hashlib.sha256()
    have = 0
    if not os.path.isfile(partial):
        return digest, 0
    with open(partial, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            have += len(block)
    return digest, have


def _append(response: Any, partial: str, have: int, total: Optional[int], digest: Any,
            on_bytes: Optional[Callable[[int, Optional[int]], None]]) -> int:
    # Never through a link (a resumed download appends): O_NOFOLLOW on the partial file itself.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if have else os.O_TRUNC)
    try:
        fd = os.open(partial, flags, 0o644)
    except OSError as exc:
        raise TransferError("cannot write %s: %s (a link there is never followed; remove it)"
                            % (partial, exc.strerror)) from None
    done = have
    with os.fdopen(fd, "wb") as handle:
        while True:
            block = response.read(CHUNK)
            if not block:
                break
            handle.write(block)
            digest.update(block)
            done += len(block)
            if on_bytes is not None:
                on_bytes(done, total)
        handle.flush()
        os.fsync(handle.fileno())
    if total is not None and done < total:
        raise OSError("connection closed at %d of %d bytes" % (done, total))
    return done


def token_safe_opener() -> Any:
    """urllib's opener, except that a redirect to another host does not carry the bearer token, as requests
    and huggingface_hub do."""
    import urllib.request
    from urllib.parse import urlsplit

    class TokenStaysOnItsHost(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
                new.remove_header("Authorization")
            return new

    return urllib.request.build_opener(TokenStaysOnItsHost)


def display_url(url: str) -> str:
    """The URL without its query string, which may carry a signature."""
    return url.split("?", 1)[0]

