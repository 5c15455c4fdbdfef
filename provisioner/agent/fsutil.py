"""Atomic file writes and ownership/mode handling."""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import stat

from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple


NO_FOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def atomic_write(path: str, data: bytes, mode: Optional[int] = None) -> None:
    """Write via a temp file in the same directory, fsync, then rename over the target.

    Nothing is written through a link: the temp file is created with O_EXCL|O_NOFOLLOW, and the rename
    replaces a link at `path` instead of following it. A hard-linked target is replaced, not rewritten, so
    the other names of its inode keep their content.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    if mode is None:
        mode = _regular_mode(path, 0o644)
    fd, tmp = _create_temp(directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _regular_mode(path: str, default: int) -> int:
    """The mode of the regular file at `path` (lstat: a link's target is not consulted), else `default`."""
    try:
        st = os.lstat(path)
    except OSError:
        return default
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else default


def _create_temp(directory: str) -> Tuple[int, str]:
    from .leftovers import temp_prefix  # named for its writer, so a killed run's temp file is swept

    for _ in range(100):
        tmp = os.path.join(directory, "%s%s" % (temp_prefix(), os.urandom(6).hex()))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o600), tmp
        except FileExistsError:
            continue
    raise ResourceFailure("cannot create a temporary file in %s" % directory)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def observe_meta(path: str) -> Dict[str, Any]:
    """Mode and ownership of an existing path, as strings for display."""
    st = os.stat(path)
    return {
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
        "owner": _user_name(st.st_uid),
        "group": _group_name(st.st_gid),
    }


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def meta_changes(spec: Dict[str, Any], observed: Dict[str, Any]) -> list:  # type: ignore[type-arg]
    """Changes for mode/owner/group where the spec sets them and they differ."""
    from .protocol import Change

    changes = []
    for field in ("mode", "owner", "group"):
        want = spec.get(field)
        have = observed.get(field)
        if want is not None and want != have:
            changes.append(Change(field, have, want, "%s is %s, want %s" % (field, have, want)))
    return changes


def apply_meta(path: str, spec: Dict[str, Any]) -> None:
    """Set mode and ownership on the path itself, through a descriptor opened without following links.

    A regular file with other hard links may share its inode with a file outside the root: it is first
    replaced by a private copy (same content and mode), so the change never reaches the other names.
    """
    mode, owner, group = spec.get("mode"), spec.get("owner"), spec.get("group")
    if not (mode or owner or group):
        return
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError as exc:
        raise ResourceFailure("unknown user or group on the host: %s" % exc) from None
    fd = _open_itself(path)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            os.close(fd)
            fd = -1
            _replace_with_private_copy(path)
            fd = _open_itself(path)
        if mode:
            os.fchmod(fd, int(mode, 8))
        if owner or group:
            try:
                os.fchown(fd, uid, gid)
            except PermissionError:
                raise ResourceFailure(
                    "cannot chown %s to %s:%s: permission denied (set target.become: true)" % (path, owner, group)
                ) from None
    finally:
        if fd >= 0:
            os.close(fd)


def _open_itself(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | NO_FOLLOW)
    except OSError as exc:
        if os.path.islink(path):
            raise ResourceFailure("%s is a symbolic link: mode and owner are never changed through a link; "
                                  "replace it with the file or directory itself" % path) from None
        raise ResourceFailure("cannot open %s to set its mode or owner: %s" % (path, exc.strerror)) from None


def _replace_with_private_copy(path: str) -> None:
    from .protocol import log

    fd = _open_itself(path)
    with os.fdopen(fd, "rb") as handle:
        content = handle.read()
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
    atomic_write(path, content, mode)
    log("%s had other hard links (its inode may be shared with a file outside the root): replaced it by a "
        "private copy before changing its mode or owner" % path)


def hard_linked(path: str) -> bool:
    """A regular file with more than one name: its content may belong to a file outside the root."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1


def remove_tree(path: str) -> None:
    """rmtree that tolerates what is already gone (shutil is imported only by the calls that need it)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def which(command: str) -> Optional[str]:
    import shutil

    return shutil.which(command)


def human_size(size: Optional[int]) -> str:
    """Bytes for people: 512 B, 2.9 MiB, 12.4 GiB."""
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return "%.1f %s" % (value, unit) if unit != "B" else "%d B" % value
        value /= 1024
    return "%d B" % (size or 0)
