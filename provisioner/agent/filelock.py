"""One lock per destination file, so that two runs (two controllers sharing a models root, which the
root lock does not cover) never write one download at the same time.

The lock is `fcntl.flock` on `<file>.lock` beside the file's `.part`: the lock has to live where every
run that can write the file looks, and only the file's own folder is common to two roots sharing it.
The holder removes the lock file before letting go, so no `.lock` stays among the models; a waiter that
then wins the flock on the removed file sees that its inode is no longer the one at the path and
tries again, so two runs can never both hold it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from .fsutil import human_size
from .protocol import ResourceFailure, log

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Callable, Iterator, Optional

#: How long a run waits for another one's download of the same file before it gives up.
WAIT_SECONDS = 6 * 3600.0
MESSAGE_EVERY_SECONDS = 15.0
_POLL_SECONDS = 0.25


def lock_path(path: str) -> str:
    return path + ".lock"


@contextlib.contextmanager
def destination_lock(path: str, label: str, progress: Optional[Callable[[], int]] = None,
                     wait_seconds: float = WAIT_SECONDS) -> Iterator[bool]:
    """Hold the lock of destination `path`; yields whether this run had to wait for another one first.

    `progress` tells how many bytes the other run has so far, for the waiting messages.
    """
    lock = lock_path(path)
    deadline = time.monotonic() + wait_seconds
    waited = False
    next_message = 0.0
    while True:
        fd = _open(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            now = time.monotonic()
            if now > deadline:
                raise ResourceFailure(
                    "%s: another run has been downloading this file for over %d s (it holds %s); let it finish, "
                    "or stop it and run apply again" % (label, wait_seconds, lock)) from None
            if now >= next_message:
                so_far = " (%s so far)" % human_size(progress()) if progress is not None else ""
                log("%s: another run is downloading this file%s; waiting for it" % (label, so_far))
                next_message = now + MESSAGE_EVERY_SECONDS
            waited = True
            time.sleep(_POLL_SECONDS)
            continue
        if _still_at_path(fd, lock):
            break
        os.close(fd)  # the holder removed that file as it let go: lock the one at the path now
    try:
        yield waited
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _open(lock: str) -> int:
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ResourceFailure("cannot open the lock file %s: %s (a link there is never followed; remove it)"
                              % (lock, exc.strerror)) from None


def _still_at_path(fd: int, lock: str) -> bool:
    try:
        at_path = os.lstat(lock)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)
