"""A model file that is already in the host's Hugging Face cache is linked into place, not downloaded.

The cache is huggingface_hub's own layout: `<cache>/models--<org>--<name>/blobs/<blob>` holds the bytes
(an LFS file's blob is named by its sha256), `snapshots/<commit>/<path>` links to them and
`refs/<branch>` names a branch's commit. A candidate is used only when its sha256 is the pinned one.

It becomes a hard link when the cache is on the destination's filesystem: no second copy of many
gigabytes, done at once, and it survives pruning the cache (that removes only the cache's name for the
bytes). A symlink would break then. Where a hard link cannot be made (another filesystem, or a cache
file of another user under protected_hardlinks) the file is copied.
"""

from __future__ import annotations

import contextlib
import os
import re

from .fsutil import sha256_file
from .leftovers import temp_prefix
from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Dict, Iterator, List, Mapping, Optional

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 1 << 20


def cache_dirs(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Where huggingface_hub keeps its cache on this host, in the order it reads its settings."""
    env = os.environ if environ is None else environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return [os.path.expanduser(explicit)]
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return [os.path.join(os.path.expanduser(home), "hub")]


def find(hub: Dict[str, str], sha256: str, size: Optional[int], verify: bool = True) -> Optional[str]:
    """A file in the host's cache with this sha256 (and size, when known); None when there is none.

    Without `verify` only the size is compared (for plan, which must not hash gigabytes); apply verifies.
    """
    for candidate in _candidates(hub, sha256):
        try:
            real = os.path.realpath(candidate)
            st = os.stat(real)
        except OSError:
            continue
        if not os.path.isfile(real) or (size is not None and st.st_size != size):
            continue
        if not verify or sha256_file(real) == sha256:
            return real
    return None


def _candidates(hub: Dict[str, str], sha256: str) -> Iterator[str]:
    seen = set()
    for cache in cache_dirs():
        folder = os.path.join(cache, "models--" + hub["repo"].replace("/", "--"))
        paths = [os.path.join(folder, "blobs", sha256)]
        commit = _commit(folder, hub["revision"])
        snapshots = os.path.join(folder, "snapshots")
        if commit:
            paths.append(os.path.join(snapshots, commit, hub["file"]))
        try:
            others = sorted(os.listdir(snapshots))
        except OSError:
            others = []
        # Another commit may hold the same bytes (the file did not change between them); the sha256 decides.
        paths += [os.path.join(snapshots, name, hub["file"]) for name in others if name != commit]
        for path in paths:
            if path not in seen:
                seen.add(path)
                yield path


def _commit(folder: str, revision: str) -> Optional[str]:
    if _COMMIT.match(revision):
        return revision
    if "/" in revision or revision.startswith("."):
        return None
    try:
        with open(os.path.join(folder, "refs", revision), encoding="utf-8") as handle:
            commit = handle.read().strip()
    except OSError:
        return None
    return commit if _COMMIT.match(commit) else None


def place(cached: str, path: str) -> str:
    """Put `cached` at `path` (a hard link, else a copy), atomically; returns "linked" or "copied"."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, "%shfcache-%s" % (temp_prefix(), os.path.basename(path)))
    _discard(tmp)
    how = "linked"
    try:
        os.link(cached, tmp)
    except OSError:
        how = "copied"
        _copy(cached, tmp)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise ResourceFailure("%s: cannot put the file from the Hugging Face cache in place: %s"
                              % (path, exc.strerror)) from None
    return how


def _copy(source: str, tmp: str) -> None:
    import shutil

    try:
        with open(source, "rb") as reader, open(tmp, "xb") as writer:
            shutil.copyfileobj(reader, writer, CHUNK)
            writer.flush()
            os.fsync(writer.fileno())
    except OSError as exc:
        _discard(tmp)
        raise ResourceFailure("cannot copy %s from the Hugging Face cache: %s" % (source, exc.strerror)) from None


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

