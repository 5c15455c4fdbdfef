"""What the manifest does not know in the folders a user cares about: custom_nodes and the model folders.

Information only: listed by plan, never touched. One listing per folder and lstat per entry (a folder's
bytes are summed without following links), no hashing; files the ComfyUI checkout itself tracks
(custom_nodes/example_node.py.example, models/checkpoints/put_checkpoints_here) are not listed.
"""

from __future__ import annotations

import os

from . import procs
from .leftovers import MARK
from .protocol import Context, ResourceFailure
from .removal import tree_bytes

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Set, Tuple

SKIPPED = ("__pycache__",)


def listing(request: Dict[str, Any], ctx: Context, known: List[str]) -> List[Dict[str, Any]]:
    """Unmanaged entries: {path (relative to the root), kind (custom_node / model), bytes, link}."""
    watch = request.get("watch") or {}
    folders = [(rel, "custom_node") for rel in watch.get("custom_nodes") or []]
    folders += [(rel, "model") for rel in watch.get("models") or []]
    managed = [os.path.normpath(p) for p in known]
    tracked = _tracked(request, ctx, [rel for rel, _ in folders])
    out: List[Dict[str, Any]] = []
    seen: Set[str] = set()
    for rel, kind in folders:
        try:
            folder = ctx.path(rel)
        except ResourceFailure:
            continue  # a folder that leads out of the root is not looked into
        if folder in seen or not os.path.isdir(folder) or os.path.islink(folder):
            continue
        seen.add(folder)
        for name in sorted(os.listdir(folder)):
            full = os.path.join(folder, name)
            if name.startswith(".") or name in SKIPPED or MARK in name or full in tracked:
                continue
            # Managed: the entry itself, or a folder holding a managed path (models/loras/sub/x.safetensors).
            # A managed folder above (the ComfyUI checkout, a directory resource) does not make it managed.
            if any(m == full or m.startswith(full + os.sep) for m in managed):
                continue
            out.append(_entry(full, kind, ctx))
    return out


def _entry(full: str, kind: str, ctx: Context) -> Dict[str, Any]:
    link = os.path.islink(full)
    if link:
        size = 0
    elif os.path.isdir(full):
        size = tree_bytes(full)
    else:
        size = os.lstat(full).st_size
    return {"path": os.path.relpath(full, ctx.root), "kind": kind, "bytes": size, "link": link}


def _tracked(request: Dict[str, Any], ctx: Context, folders: List[str]) -> Set[str]:
    """Every path (and its parents) tracked by a managed git checkout that holds a watched folder."""
    tracked: Set[str] = set()
    for checkout, inside in _checkouts(request, folders):
        try:
            path = ctx.path(checkout)
        except ResourceFailure:
            continue
        if not os.path.isdir(os.path.join(path, ".git")):
            continue
        done = procs.run(["git", "-C", path, "ls-files", "-z", "--", *inside])
        if not done.ok:
            continue
        for name in done.output.split("\0"):
            parts = name.split("/") if name else []
            for depth in range(1, len(parts) + 1):
                tracked.add(os.path.join(path, *parts[:depth]))
    return tracked


def _checkouts(request: Dict[str, Any], folders: List[str]) -> List[Tuple[str, List[str]]]:
    out = []
    for resource in request["resources"]:
        if resource["kind"] != "git":
            continue
        root = resource["spec"]["path"].rstrip("/")
        inside = [f[len(root) + 1:] for f in folders if f.startswith(root + "/")]
        if inside:
            out.append((root, inside))
    return out
