"""A large file fetched over HTTP(S) (model weights, wheels): resumable, sha256-verified, stat-cached.

A no-op probe of many gigabytes must cost nothing, so an existing file is trusted when its size and
mtime match what the stat cache recorded when it was last verified; `--deep` re-hashes it.

When the controller pushed the file from its download cache (`staged` in the spec), that copy is
verified and moved into place instead; a missing or wrong staged file falls back to the URL.
"""

from __future__ import annotations

import os
import time

from .. import procs, staging
from ..fsutil import human_size, sha256_file
from ..protocol import Change, Context, ResourceFailure, StepStopped, emit, log
from ..statcache import StatCache

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

CHUNK = 1 << 20
#: Observed fields that say how the probe looked (hashed now, or trusted the stat cache), not what it found:
#: a saved plan's fingerprint leaves them out.
NOT_STATE = ("rehashed",)
PROGRESS_EVERY_SECONDS = 2.0
RETRIES = 4


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.model_path(spec["path"])
    if not os.path.isfile(path):
        partial = ctx.model_path(spec["path"] + ".part")
        return {"exists": False, "partial_bytes": os.path.getsize(partial) if os.path.isfile(partial) else 0}
    st = os.stat(path)
    cache = StatCache(ctx)
    sha = None if ctx.deep else cache.lookup(path, st)
    hashed = False
    if sha is None and spec.get("sha256"):
        sha = sha256_file(path)
        hashed = True
        cache.record(path, st, sha)
    return {"exists": True, "size": st.st_size, "sha256": sha, "rehashed": hashed}


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    if not observed["exists"]:
        size = spec.get("size")
        detail = " (%s)" % human_size(size) if size else ""
        resume = " resuming at %s" % human_size(observed["partial_bytes"]) if observed["partial_bytes"] else ""
        return [Change("file", None, _short(spec.get("sha256")) or spec["url"],
                       "not downloaded%s%s" % (detail, resume), "create")]
    changes = []
    if spec.get("size") is not None and observed["size"] != spec["size"]:
        changes.append(Change("size", observed["size"], spec["size"],
                              "size differs: the file is incomplete or replaced"))
    if spec.get("sha256") and observed["sha256"] != spec["sha256"]:
        changes.append(Change("sha256", _short(observed["sha256"]), _short(spec["sha256"]),
                              "content does not match the pinned sha256"))
    return changes


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    path = ctx.model_path(spec["path"])
    partial = ctx.model_path(spec["path"] + ".part")  # a planted link there must not lead out of the root
    if observed["exists"]:
        os.unlink(path)  # a wrong or truncated file cannot be resumed: fetch it again
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if _place_staged(spec, path, ctx):
        return
    _check_space(spec, partial, ctx)
    resumed = os.path.isfile(partial) and os.path.getsize(partial) > 0
    _fetch(spec, partial, ctx)
    digest = sha256_file(partial)
    if resumed and spec.get("sha256") and digest != spec["sha256"]:
        # The .part a killed run left was of another file (the manifest or the upstream moved since): once
        # more from the first byte, so that the next apply after a kill converges whatever it asks for.
        log("%s: the resumed download does not match the pinned sha256; fetching it again from the start"
            % spec["path"])
        os.unlink(partial)
        _fetch(spec, partial, ctx)
        digest = sha256_file(partial)
    if spec.get("sha256") and digest != spec["sha256"]:
        os.unlink(partial)
        raise ResourceFailure("%s: downloaded sha256 %s does not match the pinned %s; the partial file was removed"
                              % (spec["path"], digest[:12], spec["sha256"][:12]))
    os.replace(partial, path)
    StatCache(ctx).record(path, os.stat(path), digest)


def _place_staged(spec: Dict[str, Any], path: str, ctx: Context) -> bool:
    """Move the controller's staged copy into place if it verifies; False (and the copy gone) otherwise."""
    staged = staging.staged_file(spec, ctx)
    if staged is None:
        if spec.get("staged"):
            log("%s: the file staged by the controller is missing (or not in .provision/incoming); fetching %s" % (
                spec["path"], _display_url(spec["url"])))
        return False
    size = os.path.getsize(staged)
    digest = _verified_digest(spec, staged, size)
    if digest is None:
        staging.discard(staged)
        return False
    _move_into_place(staged, path, spec)
    staging.discard(path + ".part")  # an earlier interrupted fetch of the URL is not needed any more
    StatCache(ctx).record(path, os.stat(path), digest)
    emit("progress", id="download:" + spec["path"], phase="bytes", done=size, total=size)
    log("%s: placed from the controller's download cache (%s)" % (spec["path"], human_size(size)))
    return True


def _verified_digest(spec: Dict[str, Any], staged: str, size: int) -> Optional[str]:
    """The staged file's sha256 when it matches the spec's size and sha256; None (and why, logged) if not."""
    if spec.get("size") is not None and size != spec["size"]:
        problem = "has %d bytes, not %d" % (size, spec["size"])
    else:
        digest = sha256_file(staged)
        if not spec.get("sha256") or digest == spec["sha256"]:
            return digest
        problem = "has sha256 %s, not the pinned %s" % (digest[:12], spec["sha256"][:12])
    log("%s: the file staged by the controller %s; discarded it, fetching %s" % (
        spec["path"], problem, _display_url(spec["url"])))
    return None


def _move_into_place(staged: str, path: str, spec: Dict[str, Any]) -> None:
    """A rename where both are on one filesystem; otherwise a copy that is on disk before it is renamed in."""
    try:
        os.replace(staged, path)
        return
    except OSError as exc:
        import errno

        if exc.errno != errno.EXDEV:
            raise ResourceFailure("%s: cannot move the staged file into place: %s" % (spec["path"], exc)) from None
    import shutil
    import tempfile

    from ..leftovers import temp_prefix

    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as target, open(staged, "rb") as source:
            shutil.copyfileobj(source, target, CHUNK)
            target.flush()
            os.fsync(target.fileno())
        os.chmod(tmp, os.stat(staged).st_mode & 0o7777)
        os.replace(tmp, path)
    except OSError as exc:
        staging.discard(tmp)
        raise ResourceFailure("%s: cannot copy the staged file into place: %s" % (spec["path"], exc)) from None
    staging.discard(staged)


def _check_space(spec: Dict[str, Any], partial: str, ctx: Context) -> None:
    import shutil

    size = spec.get("size")
    if not size:
        return
    have = os.path.getsize(partial) if os.path.exists(partial) else 0
    free = shutil.disk_usage(os.path.dirname(partial)).free
    if size - have > free:
        raise ResourceFailure("%s needs %s more but only %s is free under %s" % (
            spec["path"], human_size(size - have), human_size(free), os.path.dirname(partial)))


def _fetch(spec: Dict[str, Any], partial: str, ctx: Context) -> None:
    """Download into `partial`, resuming with HTTP Range after a drop; bounded retries with backoff."""
    import urllib.error  # here, not at the top: only a download that fetches pays for the HTTP stack
    import urllib.request

    opener = token_safe_opener()
    last_error: Optional[str] = None
    for attempt in range(RETRIES):
        have = os.path.getsize(partial) if os.path.exists(partial) else 0
        request = urllib.request.Request(spec["url"], headers=_headers(spec, have))
        try:
            with opener.open(request, timeout=60) as response:
                if have and response.status != 206:
                    have = 0  # the server ignored Range: start over
                total = _total(response, have)
                _stream(response, partial, have, total, spec)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                return  # already complete
            if exc.code in (401, 403):
                raise ResourceFailure("%s: %s %s; set the HF_TOKEN secret (or check access to the repo)"
                                      % (spec["path"], exc.code, exc.reason)) from None
            if exc.code == 404:
                raise ResourceFailure("%s: not found at %s" % (spec["path"], _display_url(spec["url"]))) from None
            last_error = "HTTP %s %s" % (exc.code, exc.reason)
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(getattr(exc, "reason", exc))
        procs.pause(min(2 ** attempt, 10) * 0.5)
    raise ResourceFailure("%s: download from %s failed after %d tries: %s"
                          % (spec["path"], _display_url(spec["url"]), RETRIES, last_error))


def token_safe_opener() -> Any:
    """urllib's opener, except that a redirect to another host (the Hub's CDN, or wherever a mirror
    points) does not carry the bearer token along, as requests does. The controller's fetchers use it too."""
    import urllib.request
    from urllib.parse import urlsplit

    class TokenStaysOnItsHost(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
                new.remove_header("Authorization")
            return new

    return urllib.request.build_opener(TokenStaysOnItsHost)


def _headers(spec: Dict[str, Any], have: int) -> Dict[str, str]:
    headers = {"User-Agent": "provision-agent"}
    if have:
        headers["Range"] = "bytes=%d-" % have
    if spec.get("token"):
        headers["Authorization"] = "Bearer " + spec["token"]
    return headers


def _total(response: Any, have: int) -> Optional[int]:
    length = response.headers.get("Content-Length")
    return have + int(length) if length and length.isdigit() else None


def _stream(response: Any, partial: str, have: int, total: Optional[int], spec: Dict[str, Any]) -> None:
    # Never through a link (a resumed download appends): O_NOFOLLOW on the partial file itself.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if have else os.O_TRUNC)
    try:
        fd = os.open(partial, flags, 0o644)
    except OSError as exc:
        raise ResourceFailure("cannot write %s: %s (a link there is never followed; remove it)"
                              % (partial, exc.strerror)) from None
    done = have
    last = time.time()
    with os.fdopen(fd, "wb") as handle:
        while True:
            if procs.stopping():
                raise StepStopped()  # the agent is stopping; the .part stays for the next apply to resume
            block = response.read(CHUNK)
            if not block:
                break
            handle.write(block)
            done += len(block)
            if time.time() - last > PROGRESS_EVERY_SECONDS:
                last = time.time()
                emit("progress", id="download:" + spec["path"], phase="bytes", done=done, total=total)
    if total is not None and done < total:
        raise OSError("connection closed at %d of %d bytes" % (done, total))
    # The last count, however short the transfer was: the controller shows the file as complete.
    emit("progress", id="download:" + spec["path"], phase="bytes", done=done, total=total if total else done)


def _display_url(url: str) -> str:
    return url.split("?", 1)[0]


def _short(sha: Optional[str]) -> Optional[str]:
    return "sha256:" + sha[:12] if sha else None
