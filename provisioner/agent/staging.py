"""Files the controller pushed ahead of an apply (a download served from its cache), under .provision/incoming.

The controller names a staged file in the resource's spec (`staged`: an absolute path). Only a regular
file directly inside this root's incoming folder is accepted, so a request cannot make the agent move
or delete anything else.
"""

from __future__ import annotations

import contextlib
import os
import stat

from .protocol import Context

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


def incoming_dir(ctx: Context) -> str:
    return ctx.state_path("incoming")


def staged_file(spec: Dict[str, Any], ctx: Context) -> Optional[str]:
    """The spec's staged file when it is a regular file in the incoming folder; None otherwise."""
    staged = spec.get("staged")
    if not staged or not os.path.isabs(staged):
        return None
    staged = os.path.normpath(staged)
    if os.path.dirname(staged) != os.path.normpath(incoming_dir(ctx)):
        return None
    try:
        return staged if stat.S_ISREG(os.lstat(staged).st_mode) else None
    except OSError:
        return None


def discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def discard_unused(resources: List[Dict[str, Any]], ctx: Context) -> None:
    """Remove staged files the apply did not consume (it failed first, or the file was already in place)."""
    for resource in resources:
        path = staged_file(resource["spec"], ctx)
        if path is not None:
            discard(path)
    with contextlib.suppress(OSError):
        os.rmdir(incoming_dir(ctx))  # only when empty: another run may be staging into it
