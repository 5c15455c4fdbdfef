"""The state folder <root>/.provision, which the agent trusts: refused when it, or anything in it, is a link or
belongs to another user.

Generations, service records and caches decide what the agent runs and signals; a link planted there would
redirect its writes, and a file owned by someone else would let that user steer it. Each path under the
folder is checked component by component with lstat (nothing is followed) before it is read or written.
"""

from __future__ import annotations

import os
import stat

from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Optional

FOLDER = ".provision"


def _user(uid: int) -> str:
    import pwd

    try:
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % uid


def check(path: str) -> Optional[os.stat_result]:
    """lstat of `path` when it exists and may be trusted; None when it does not exist; else ResourceFailure."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ResourceFailure("cannot inspect the state path %s: %s" % (path, exc.strerror)) from None
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise ResourceFailure(
            "%s is a symbolic link (to %s): the state folder and everything in it must be real files and folders "
            "owned by %s, since a link would redirect what the agent writes. Remove the link (and find out who "
            "planted it), then re-run" % (path, target, _user(me)))
    if st.st_uid != me:
        raise ResourceFailure(
            "%s is owned by %s, not by %s, the user the agent runs as: state another user can write is not "
            "trusted. If it is yours, run `chown -R %d %s`; otherwise remove it and re-run"
            % (path, _user(st.st_uid), _user(me), me, path))
    return st


def state_path(state_dir: str, *parts: str) -> str:
    """`state_dir/parts...`, after checking the folder and each existing component below it."""
    path = state_dir
    for prefix in [state_dir, *(os.path.join(state_dir, *parts[:n]) for n in range(1, len(parts) + 1))]:
        if check(prefix) is None:
            break  # nothing below a missing component can exist yet
    return os.path.join(path, *parts)


def read_text(path: str) -> Optional[str]:
    """The text of a state file (checked, opened without following links); None when it is missing."""
    if check(path) is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ResourceFailure("cannot read the state file %s: %s" % (path, exc.strerror)) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ResourceFailure("%s is not a regular file; remove it and re-run" % path)
        return handle.read().decode("utf-8", "replace")
