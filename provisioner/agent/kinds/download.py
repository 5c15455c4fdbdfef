"""A large file fetched over HTTP(S) (model weights, wheels): resumable, sha256-verified, stat-cached.

A no-op probe of many gigabytes must cost nothing, so an existing file is trusted when its size and
mtime match what the stat cache recorded when it was last verified; `--deep` re-hashes it.

Where the file comes from, in this order: the controller's download cache (`staged` in the spec: that
copy is verified and moved into place); for a Hub file (`hub` in the spec), the host's Hugging Face
cache when it holds the pinned sha256 (hfcache.py), then huggingface_hub in the target venv
(hubfetch.py); last, the agent's own HTTP client (transfer.py), which is all there is before the venv
exists. Every path ends with the sha256 check and an atomic rename, under the destination's lock
(filelock.py), so two runs writing one file wait for each other instead of corrupting it.
"""

from __future__ import annotations

import os
import time

from .. import filelock, hfcache, hubfetch, linkshare, procs, staging, transfer
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
#: huggingface_hub's local_dir is `<file>.hub`, beside the file: on its filesystem, so the rename into place is
#: atomic, and kept after a drop, so that its .incomplete file resumes on the next run.
HUB_STAGING_SUFFIX = ".hub"


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.model_path(spec["path"])
    if not os.path.isfile(path):
        partial = ctx.model_path(spec["path"] + ".part")
        in_cache = None
        if spec.get("hub") and spec.get("sha256"):
            in_cache = hfcache.find(spec["hub"], spec["sha256"], spec.get("size"), verify=False)
        return {"exists": False, "partial_bytes": os.path.getsize(partial) if os.path.isfile(partial) else 0,
                "hf_cache": in_cache}
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
        if observed.get("hf_cache"):
            resume = "; from the Hugging Face cache (%s, linked once its sha256 is checked)" % observed["hf_cache"]
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
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with filelock.destination_lock(path, spec["path"], lambda: _bytes_so_far(path)) as waited:
        if _finished_meanwhile(spec, observed, path, ctx, waited):
            return
        if os.path.lexists(path):
            os.unlink(path)  # a wrong or truncated file cannot be resumed: fetch it again
        if _place_staged(spec, path, ctx) or _place_from_hub(spec, path, ctx):
            _discard_partials(path)
            return
        _check_space(spec, partial, ctx)
        digest = _fetch_verified(spec, partial)
        os.replace(partial, path)
        StatCache(ctx).record(path, os.stat(path), digest)
        _discard_partials(path)


def _finished_meanwhile(spec: Dict[str, Any], observed: Dict[str, Any], path: str, ctx: Context,
                        waited: bool) -> bool:
    """Whether another run put the right file in place while this one waited for the lock (or since the probe)."""
    if not os.path.isfile(path) or os.path.islink(path):
        return False
    st = os.stat(path)
    if observed["exists"] and not waited and st.st_size == observed["size"]:
        return False  # the file the probe judged wrong (no need to hash it again)
    if spec.get("size") is not None and st.st_size != spec["size"]:
        return False
    if spec.get("sha256"):
        digest = sha256_file(path)
        if digest != spec["sha256"]:
            return False
    elif observed["exists"]:
        return False  # it was there, unpinned, and judged wrong: replace it
    else:
        digest = sha256_file(path)
    StatCache(ctx).record(path, st, digest)
    if waited:
        log("%s: another run finished downloading this file; using it" % spec["path"])
    return True


def _fetch_verified(spec: Dict[str, Any], partial: str) -> str:
    resumed = os.path.isfile(partial) and os.path.getsize(partial) > 0
    digest = _fetch(spec, partial)
    if resumed and spec.get("sha256") and digest != spec["sha256"]:
        # The .part a killed run left was of another file (the manifest or the upstream moved since): once
        # more from the first byte, so that the next apply after a kill converges whatever it asks for.
        log("%s: the resumed download does not match the pinned sha256; fetching it again from the start"
            % spec["path"])
        os.unlink(partial)
        digest = _fetch(spec, partial)
    if spec.get("sha256") and digest != spec["sha256"]:
        os.unlink(partial)
        raise ResourceFailure("%s: downloaded sha256 %s does not match the pinned %s; the partial file was removed"
                              % (spec["path"], digest[:12], spec["sha256"][:12]))
    return digest


def _place_from_hub(spec: Dict[str, Any], path: str, ctx: Context) -> bool:
    """A Hub file: from the host's Hugging Face cache, else through huggingface_hub in the venv."""
    hub = spec.get("hub")
    if not hub:
        return False
    if spec.get("sha256"):
        cached = hfcache.find(hub, spec["sha256"], spec.get("size"))
        if cached is not None:
            how = hfcache.place(cached, path)
            StatCache(ctx).record(path, os.stat(path), spec["sha256"])
            size = os.path.getsize(path)
            emit("progress", id="download:" + spec["path"], phase="bytes", done=size, total=size)
            log("%s: from the Hugging Face cache (%s %s%s)" % (
                spec["path"], how, cached,
                ": same filesystem, no second copy" if how == "linked" else ": a hard link cannot be made there"))
            return True
    python = hubfetch.interpreter(hub, ctx)
    endpoint = hubfetch.endpoint_of(spec)
    if python is None or endpoint is None:
        return False
    # Through ctx.path: a link planted at <file>.hub must not lead huggingface_hub's writes out of the root.
    staged = hubfetch.fetch(spec, python, endpoint, ctx.model_path(spec["path"] + HUB_STAGING_SUFFIX))
    if staged is None:
        return False
    digest = sha256_file(staged)
    if spec.get("sha256") and digest != spec["sha256"]:
        import shutil

        shutil.rmtree(_hub_staging(path), ignore_errors=True)
        raise ResourceFailure("%s: huggingface_hub downloaded a file with sha256 %s, not the pinned %s; it was "
                              "removed. Check the pinned sha256 and the revision" % (
                                  spec["path"], digest[:12], spec["sha256"][:12]))
    os.replace(staged, path)
    StatCache(ctx).record(path, os.stat(path), digest)
    return True


def _hub_staging(path: str) -> str:
    return path + HUB_STAGING_SUFFIX


def _bytes_so_far(path: str) -> int:
    size = os.path.getsize(path + ".part") if os.path.isfile(path + ".part") else 0
    return size + hubfetch.staged_bytes(_hub_staging(path))


def _discard_partials(path: str) -> None:
    import shutil

    staging.discard(path + ".part")  # an earlier interrupted fetch is not needed any more
    shutil.rmtree(_hub_staging(path), ignore_errors=True)


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


def _fetch(spec: Dict[str, Any], partial: str) -> str:
    """Download into `partial` with the agent's own client (resuming), returning the whole file's sha256."""
    last = [time.time()]
    told = [False]

    def progress(done: int, total: Optional[int]) -> None:
        if procs.stopping():
            raise StepStopped()  # the agent is stopping; the .part stays for the next apply to resume
        if linkshare.step_aside() and not told[0]:
            told[0] = True
            log("%s: gives the link to the install run fetching packages until it has them" % spec["path"])
        if time.time() - last[0] > PROGRESS_EVERY_SECONDS:
            last[0] = time.time()
            emit("progress", id="download:" + spec["path"], phase="bytes", done=done, total=total)

    try:
        digest = transfer.fetch(spec["url"], partial, spec.get("token"), "provision-agent", progress)
    except transfer.TransferError as exc:
        if exc.status in (401, 403):
            raise ResourceFailure("%s: %s %s; set the HF_TOKEN secret (or check access to the repo)"
                                  % (spec["path"], exc.status, exc.reason)) from None
        if exc.status == 404:
            raise ResourceFailure("%s: not found at %s" % (spec["path"], _display_url(spec["url"]))) from None
        raise ResourceFailure("%s: download from %s %s" % (spec["path"], _display_url(spec["url"]), exc)) from None
    # The last count, however short the transfer was: the controller shows the file as complete.
    done = os.path.getsize(partial)
    emit("progress", id="download:" + spec["path"], phase="bytes", done=done, total=done)
    return digest


def _display_url(url: str) -> str:
    return url.split("?", 1)[0]


def _short(sha: Optional[str]) -> Optional[str]:
    return "sha256:" + sha[:12] if sha else None
