"""The controller's download cache: each large file is fetched once, then pushed to the hosts that need it.

Files pinned by sha256 live at `<dir>/sha256/<hex>`, unpinned ones at `<dir>/url/<sha256 of the URL>`.
Next to each file, `<file>.json` records the size and mtime it had when its sha256 was last computed, so
a cached file is re-hashed only after it changed. Fleet hosts run on threads (and several `provision`
processes may share one directory): a lock per file, held from the check to the rename, makes every file
download exactly once however many hosts ask for it at the same moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from provisioner import hub_cache_fetch
from provisioner.agent import transfer
from provisioner.agent.fsutil import sha256_file
from provisioner.errors import ProvisionError


class DownloadCacheError(ProvisionError):
    """A file could not be brought into the controller's download cache; the message says which and why."""


@dataclass(frozen=True)
class CachedFile:
    path: Path
    size: int
    sha256: str
    #: True when this call downloaded it; False when it was already in the cache.
    fetched: bool


class DownloadCache:
    """A content-addressed directory of downloaded files on the controller."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.expanduser().absolute()

    def path_for(self, url: str, sha256: str | None) -> Path:
        if sha256:
            return self.directory / "sha256" / sha256
        return self.directory / "url" / hashlib.sha256(url.encode("utf-8")).hexdigest()

    def get(self, url: str, *, sha256: str | None = None, size: int | None = None, token: str | None = None,
            label: str = "", on_fetch: Callable[[str], None] | None = None,
            hub: dict[str, str] | None = None) -> CachedFile:
        """The cached file for `url`, downloaded first if it is missing or no longer matches.

        `token` goes only into the Authorization header; `label` names the resource in error messages;
        `on_fetch` hears why a download starts (only the caller that downloads hears it); `hub` (the
        resource's repo, revision and file) lets a Hub file come from the controller's Hugging Face cache
        or through huggingface_hub.
        """
        target = self.path_for(url, sha256)
        label = label or display_url(url)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadCacheError(f"download cache {self.directory}: cannot create {target.parent}: "
                                     f"{exc.strerror}; pick a directory this user can write") from None
        with file_lock(target):
            cached, reason = _verified(target, url, sha256, size)
            if cached is not None:
                return cached
            if on_fetch is not None:
                on_fetch(reason)
            digest = _download_hub_file(url, hub, target, token, sha256, size, label)
            if digest is None:
                digest = _download(url, target, token, size, label)
            if sha256 and digest != sha256:
                _discard(target)
                raise DownloadCacheError(
                    f"{label}: {display_url(url)} downloaded into the controller cache has sha256 {digest}, "
                    f"but the manifest pins {sha256}; the file was removed. Check the URL and the pinned sha256")
            st = target.stat()
            if size is not None and st.st_size != size:
                _discard(target)
                raise DownloadCacheError(
                    f"{label}: {display_url(url)} gave {st.st_size} bytes, but the manifest says size {size}; "
                    "the file was removed. Check the URL and the size")
            _write_record(target, st, digest, url)
            return CachedFile(target, st.st_size, digest, fetched=True)


display_url = transfer.display_url


# -- locking ---------------------------------------------------------------------------------------------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def file_lock(target: Path) -> Iterator[None]:
    """One holder per cached file: a thread lock within this process, flock across processes."""
    with _locks_guard:
        lock = _locks.setdefault(str(target), threading.Lock())
    with lock, open(f"{target}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- what is already there -------------------------------------------------------------------------------

def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def _verified(target: Path, url: str, sha256: str | None, size: int | None) -> tuple[CachedFile | None, str]:
    """The cached file if it is there and still right, else why not; a wrong one is removed."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return None, "not in the cache yet"
    digest = _recorded_digest(target, st)
    if digest is None:
        digest = sha256_file(str(target))
        _write_record(target, st, digest, url)
    if sha256 and digest != sha256:
        _discard(target)
        return None, f"the cached copy has sha256 {digest[:12]}, not the pinned {sha256[:12]}"
    if size is not None and st.st_size != size:
        _discard(target)
        return None, f"the cached copy has {st.st_size} bytes, not {size}"
    return CachedFile(target, st.st_size, digest, fetched=False), ""


def _recorded_digest(target: Path, st: os.stat_result) -> str | None:
    try:
        record = json.loads(_record_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("size") != st.st_size or record.get("mtime_ns") != st.st_mtime_ns:
        return None
    digest = record.get("sha256")
    return digest if isinstance(digest, str) else None


def _write_record(target: Path, st: os.stat_result, digest: str, url: str) -> None:
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest, "url": display_url(url)}
    tmp = target.with_name(f"{target.name}.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, _record_path(target))


def _discard(target: Path) -> None:
    for path in (target, _record_path(target)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()



# -- fetching --------------------------------------------------------------------------------------------

def _download_hub_file(url: str, hub: dict[str, str] | None, target: Path, token: str | None, sha256: str | None,
                       size: int | None, label: str) -> str | None:
    source = hub_cache_fetch.hub_source(url, hub)
    if source is None:
        return None
    if hub_cache_fetch.from_hf_cache(source, sha256, size, target):
        return sha256
    return hub_cache_fetch.download_with_hf(source, token, target, label, DownloadCacheError)


# -- fetching (plain HTTP) --------------------------------------------------------------------------------------------

def _download(url: str, target: Path, token: str | None, size: int | None, label: str) -> str:
    """Fetch `url` into `target` (through `<target>.part`, resuming with Range); returns its sha256."""
    partial = target.with_name(target.name + ".part")
    _check_space(partial, size, label)
    try:
        digest = transfer.fetch(url, str(partial), token, "provision-controller")
    except transfer.TransferError as exc:
        if exc.status in (401, 403):
            hint = ("check the token in the resource's auth secret" if token else
                    "the resource has no auth token: set auth (e.g. from_env: HF_TOKEN)")
            raise DownloadCacheError(f"{label}: {display_url(url)} answered {exc.status} {exc.reason} to the "
                                     f"controller's download cache; {hint}, or check access to the repo") from None
        if exc.status == 404:
            raise DownloadCacheError(f"{label}: not found at {display_url(url)}") from None
        raise DownloadCacheError(f"{label}: downloading {display_url(url)} into the controller cache {exc}; "
                                 "the next apply resumes where it stopped") from None
    os.replace(partial, target)
    return digest


def _check_space(partial: Path, size: int | None, label: str) -> None:
    if not size:
        return
    needed = size - (partial.stat().st_size if partial.exists() else 0)
    free = shutil.disk_usage(partial.parent).free
    if needed > free:
        raise DownloadCacheError(f"{label}: the controller cache needs {needed} more bytes but only {free} are "
                                 f"free under {partial.parent}; free some space or pick another directory")
