"""One writer per target root: an flock on <root>/.provision/root.lock, held for a whole apply or rollback.

The kernel drops an flock when its holder dies, however it dies (SIGKILL, a dropped SSH session that
takes the agent with it), so there is never a stale lock to clean up by hand. The holder writes who it
is into the file, so a run that finds the root locked can name the holder. Reads (probe, plan) do not
take the lock: every state file is written whole (temp file + rename or link), so a reader sees the
old file or the new one, never half of one.

The lock file is opened with O_NOFOLLOW and must be a regular file of the agent's user: a link planted
in its place is refused, not followed. (Whether the state folder itself may be a link is the state
folder's rule, not the lock's.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time

from .protocol import ResourceFailure, emit

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

LOCK_NAME = "root.lock"
POLL_SECONDS = 0.1
#: While waiting, tell the controller (and its inactivity limit) every this many seconds that we are alive.
WAITING_NOTICE_SECONDS = 5.0
#: The holder writes its identity right after taking the lock; a reader may look in between. On a loaded
#: host that gap can outlast half a second, so a refusal waits up to 3 s (60 x 50 ms) to name the holder.
HOLDER_READ_ATTEMPTS = 60


class RootLock:
    """Exclusive lock on one root; use as a context manager around the whole write."""

    def __init__(self, state_dir: str, root: str, command: str, request: Dict[str, Any]) -> None:
        self.state_dir = state_dir
        self.root = root
        self.command = command
        settings = request.get("lock") or {}
        self.timeout = max(0.0, float(settings.get("timeout") or 0))
        self.controller = settings.get("controller") or {}
        self.fd = -1

    def __enter__(self) -> RootLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        fd = _open_lock_file(self.state_dir)
        try:
            self._wait(fd)
            holder = {"pid": os.getpid(), "user": _user(), "command": self.command, "since": time.time(),
                      "controller": self.controller}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder, sort_keys=True).encode("utf-8"), 0)
        except BaseException:
            os.close(fd)  # closing drops the lock, if it was taken
            raise
        self.fd = fd

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)  # nobody holds it: a later reader must not name this run
        finally:
            os.close(self.fd)
            self.fd = -1

    def _wait(self, fd: int) -> None:
        deadline = time.monotonic() + self.timeout
        next_notice = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise ResourceFailure("cannot lock %s: %s" % (self.root, exc.strerror)) from None
            now = time.monotonic()
            if now >= deadline:
                raise ResourceFailure(self._refusal(fd))
            if now >= next_notice:
                emit("progress", id="lock", phase="waiting",
                     message="%s; waiting up to %gs" % (_describe(self.root, _holder(fd)), self.timeout))
                next_notice = now + WAITING_NOTICE_SECONDS
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - now)))

    def _refusal(self, fd: int) -> str:
        waited = " after waiting %gs" % self.timeout if self.timeout else ""
        return "%s%s; wait for it to finish or use --lock-timeout" % (_describe(self.root, _holder(fd)), waited)


def _open_lock_file(state_dir: str) -> int:
    path = os.path.join(state_dir, LOCK_NAME)
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        reason = ("it is a symbolic link (refused: the lock must not be redirected); remove it"
                  if exc.errno == errno.ELOOP else exc.strerror or str(exc))
        raise ResourceFailure("cannot open the lock file %s: %s" % (path, reason)) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise ResourceFailure("the lock file %s is not a regular file owned by %s; remove it" % (path, _user()))
    return fd


def _holder(fd: int) -> Optional[Dict[str, Any]]:
    for _ in range(HOLDER_READ_ATTEMPTS):
        try:
            data = os.pread(fd, 4096, 0)
            if data:
                holder = json.loads(data.decode("utf-8"))
                return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):
            pass
        time.sleep(POLL_SECONDS / 2)
    return None


def _describe(root: str, holder: Optional[Dict[str, Any]]) -> str:
    if not holder:
        return "root %s is locked by another run (it has not said who it is yet)" % root
    controller = holder.get("controller") or {}
    via = ""
    if controller:
        via = ", controller %s/%s pid %s" % (controller.get("host", "?"), controller.get("user", "?"),
                                           controller.get("pid", "?"))
    since = holder.get("since")
    when = ""
    if isinstance(since, (int, float)):
        when = " since %s UTC (%ds ago)" % (time.strftime("%H:%M:%S", time.gmtime(since)),
                                            max(0, int(time.time() - since)))
    return "root %s is locked by %s pid %s (user %s%s)%s" % (
        root, holder.get("command", "?"), holder.get("pid", "?"), holder.get("user", "?"), via, when)


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
