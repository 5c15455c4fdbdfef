"""Event output and the per-call context shared by every resource kind."""

from __future__ import annotations

import json
import os
import sys
import threading

from . import masking

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

_write_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line event to stdout, flushed so the controller can stream it."""
    fields["event"] = event
    # Masked before encoding: a secret with a quote or backslash in it is escaped in the JSON text.
    line = json.dumps(masking.mask(fields), sort_keys=True, default=str)
    with _write_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # EPIPE, or stdout closed: nobody reads this agent any more
            raise ControllerLost() from None


class ControllerLost(BaseException):
    """stdout is gone: the controller was killed, gave up on this host, or the SSH session died.

    A BaseException, so that no `except Exception` (or `except OSError`) in a resource kind mistakes it
    for a failure of that resource and goes on with the next one (see heartbeat.py).
    """


def log(message: str) -> None:
    emit("log", message=message)


class ResourceFailure(Exception):
    """A resource could not be probed or applied; the message is shown to the user as is."""


class Change(dict):  # type: ignore[type-arg]
    """One difference between desired and observed state, with a human reason."""

    def __init__(self, field: str, old: Any, new: Any, reason: str, action: str = "update") -> None:
        super().__init__(field=field, old=old, new=new, reason=reason, action=action)


class Context:
    """What every probe/apply needs: the target root and the run's options."""

    def __init__(self, root: str, options: Optional[Dict[str, Any]] = None,
                 extra_roots: Optional[List[str]] = None) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        #: Folders outside the root where model files and folders may live (target.extra_roots).
        self.extra_roots = [os.path.normpath(r) for r in extra_roots or []]
        self.options = options or {}
        self.force = bool(self.options.get("force"))
        self.deep = bool(self.options.get("deep"))
        self.verbose = bool(self.options.get("verbose"))
        self.interpreter_cache: Dict[str, Any] = {}

    def path(self, relative: str) -> str:
        """Absolute path of `relative` under the root; refuses anything that resolves outside it."""
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts:
            raise ResourceFailure("path %r escapes the target root %s" % (relative, self.root))
        full = os.path.normpath(os.path.join(self.root, relative))
        real_root = os.path.realpath(self.root)
        # Follow symlinks on the longest existing prefix: a link must not lead out of the root.
        probe = full
        while not os.path.lexists(probe) and probe != self.root:
            probe = os.path.dirname(probe)
        real = os.path.realpath(probe)
        if real != real_root and not real.startswith(real_root + os.sep):
            raise ResourceFailure("path %r resolves to %s, outside the target root %s" % (relative, real, self.root))
        return full

    def model_path(self, path: str) -> str:
        """path() for model files and folders, which may also lie inside an extra root: an absolute path
        there, with the same rules (no '..', no link that leads out of that extra root)."""
        if not path.startswith("/"):
            return self.path(path)
        if ".." in path.split("/"):
            raise ResourceFailure("path %r must not contain '..' segments" % path)
        full = os.path.normpath(path)
        extra = next((r for r in self.extra_roots if full == r or full.startswith(r.rstrip("/") + "/")), None)
        if extra is None:
            raise ResourceFailure("path %r is outside the target root %s and every extra root (%s)" % (
                path, self.root, ", ".join(self.extra_roots) or "none"))
        if full == extra:
            raise ResourceFailure("path %r is the extra root itself: provision uses an extra root as it is and "
                                  "manages only files and folders inside it" % path)
        if not os.path.isdir(extra):
            raise ResourceFailure("extra root %s does not exist on the host (not mounted?): provision uses an extra "
                                  "root, it never creates one" % extra)
        real_extra = os.path.realpath(extra)
        real_root = os.path.realpath(self.root)
        if real_root == real_extra or real_root.startswith(real_extra.rstrip("/") + "/"):
            raise ResourceFailure("extra root %s holds the target root %s: an extra root is a folder beside the "
                                  "root, such as /mnt/models" % (extra, self.root))
        probe = full
        while not os.path.lexists(probe) and probe != extra:
            probe = os.path.dirname(probe)
        real = os.path.realpath(probe)
        if real != real_extra and not real.startswith(real_extra.rstrip("/") + "/"):
            raise ResourceFailure("path %r resolves to %s, outside the extra root %s" % (path, real, extra))
        return full

    def owned_path(self, relative: str) -> str:
        """path() for a resource that replaces or cleans what is there (a venv rebuild, git clean):
        never the root itself, whatever the controller sent."""
        full = self.path(relative)
        if full == os.path.normpath(self.root):
            raise ResourceFailure("path %r is the target root itself; a venv or git checkout needs a folder "
                                  "of its own under %s" % (relative, self.root))
        return full

    def program_path(self, relative: str) -> str:
        """Absolute path of a program under the root, for running it: a venv's bin/python is a symlink
        to an interpreter elsewhere, which is fine to execute (nothing is written through it)."""
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ResourceFailure("program path %r escapes the target root %s" % (relative, self.root))
        return os.path.normpath(os.path.join(self.root, relative))

    def state_dir(self) -> str:
        """<root>/.provision, refused when it is a link or not the agent user's (see statedir)."""
        from .statedir import FOLDER, check

        path = os.path.join(self.root, FOLDER)
        check(path)
        return path

    def state_path(self, *parts: str) -> str:
        """A path under the state folder, every existing component of it checked like the folder."""
        from .statedir import state_path

        return state_path(self.state_dir(), *parts)


def changes_list(changes: List[Change]) -> List[Dict[str, Any]]:
    return [dict(c) for c in changes]
