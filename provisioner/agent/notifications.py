"""Handlers notified and not yet run, kept on the host (.provision/pending-handlers.json).

A handler runs at the end of the apply in which a resource that notifies it changed. When that apply
is killed (or a failure keeps a command handler from running) after the change, the next apply finds
the resource in place and nothing notifies the handler again: ComfyUI would keep running the old
plugin for good. So the names are written down before the change is made, and struck off only once
the handler has run; the next apply runs whatever is still written down, and a plan shows it as a
change (`handler:NAME`), so that "no changes" is never said while a restart is owed.
"""

from __future__ import annotations

import json
import os

from .fsutil import atomic_write
from .protocol import Change, Context

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List

FILE = "pending-handlers.json"


def _path(ctx: Context) -> str:
    return os.path.join(ctx.state_dir(), FILE)


def pending(ctx: Context) -> List[str]:
    """Handlers an earlier apply was to run and did not."""
    try:
        with open(_path(ctx), encoding="utf-8") as handle:
            names = json.load(handle).get("handlers")
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _write(ctx: Context, names: List[str]) -> None:
    if names:
        atomic_write(_path(ctx), json.dumps({"handlers": names}).encode("utf-8"), 0o600)
    elif os.path.exists(_path(ctx)):
        os.unlink(_path(ctx))


def expect(ctx: Context, names: Iterable[str]) -> None:
    """Before a change that notifies `names`: write them down (a failed change may have changed something
    too, so they stay until they run)."""
    written = pending(ctx)
    new = [n for n in names if n not in written]
    if new:
        _write(ctx, written + new)


def settle(ctx: Context, ran: List[Dict[str, Any]], handlers: Dict[str, Any]) -> None:
    """After the handlers: strike off those that ran and those the request no longer has."""
    done = {entry["name"] for entry in ran}
    written = pending(ctx)
    left = [n for n in written if n not in done and n in handlers]
    if left != written:
        _write(ctx, left)


def plan_rows(ctx: Context, handlers: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Plan rows for the handlers still owed (those the request still has)."""
    return [{"id": "handler:" + name, "status": "change", "changes": [dict(Change(
        "handler", None, name, "notified by an apply that did not get to run it; the next apply runs it", "run"))]}
        for name in pending(ctx) if name in handlers]
