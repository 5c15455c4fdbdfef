"""Atomic file writes and ownership/mode handling."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat

from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Optional


def atomic_write(path: str, data: bytes, mode: Optional[int] = None) -> None:
    """Write via a temp file in the same directory, fsync, then rename over the target."""
    import tempfile

    from .leftovers import temp_prefix  # named for its writer, so a killed run's temp file is swept

    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        elif os.path.exists(path):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    if spec.get("mode"):
        os.chmod(path, int(spec["mode"], 8))
    owner, group = spec.get("owner"), spec.get("group")
    if owner or group:
        try:
            uid = pwd.getpwnam(owner).pw_uid if owner else -1
            gid = grp.getgrnam(group).gr_gid if group else -1
        except KeyError as exc:
            raise ResourceFailure("unknown user or group on the host: %s" % exc) from None
        try:
            os.chown(path, uid, gid)
        except PermissionError:
            raise ResourceFailure(
                "cannot chown %s to %s:%s: permission denied (set target.become: true)" % (path, owner, group)
            ) from None


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
