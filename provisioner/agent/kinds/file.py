"""A file with literal content (templates are rendered on the controller)."""

from __future__ import annotations

import hashlib
import os

from ..fsutil import apply_meta, atomic_write, hard_linked, meta_changes, observe_meta, sha256_file
from ..protocol import Change, Context, ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List

DIFF_LIMIT_BYTES = 64 * 1024
DIFF_LIMIT_LINES = 40


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.path(spec["path"])
    if not os.path.lexists(path):
        return {"exists": False}
    if not os.path.isfile(path):
        return {"exists": True, "is_file": False}
    observed: Dict[str, Any] = {"exists": True, "is_file": True, "sha256": sha256_file(path)}
    observed.update(observe_meta(path))
    return observed


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    want = spec["content"].encode("utf-8")
    want_sha = hashlib.sha256(want).hexdigest()
    if not observed["exists"]:
        return [Change("content", None, "sha256:" + want_sha[:12], "file does not exist", "create")]
    if not observed["is_file"]:
        return [Change("type", "not a regular file", "file", "%s exists but is not a regular file" % spec["path"])]
    changes = []
    if observed["sha256"] != want_sha:
        changes.append(
            Change("content", "sha256:" + observed["sha256"][:12], "sha256:" + want_sha[:12],
                   _content_reason(spec, ctx))
        )
    return changes + meta_changes(spec, observed)


def _content_reason(spec: Dict[str, Any], ctx: Context) -> str:
    path = ctx.path(spec["path"])
    if hard_linked(path):
        # Its inode may be a file outside the root (/etc/shadow): its content is not shown.
        return "content differs (the file has other hard links; it is replaced by a private file)"
    try:
        if os.path.getsize(path) > DIFF_LIMIT_BYTES or len(spec["content"]) > DIFF_LIMIT_BYTES:
            return "content differs"
        with open(path, encoding="utf-8") as handle:
            have = handle.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return "content differs"
    import difflib

    lines = list(difflib.unified_diff(have, spec["content"].splitlines(), "host", "desired", lineterm="", n=1))
    if len(lines) > DIFF_LIMIT_LINES:
        lines = [*lines[:DIFF_LIMIT_LINES], "... (%d more diff lines)" % (len(lines) - DIFF_LIMIT_LINES)]
    return "content differs:\n" + "\n".join(lines)


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    path = ctx.path(spec["path"])
    if observed["exists"] and not observed["is_file"]:
        raise ResourceFailure("%s exists and is not a regular file; move it away first" % path)
    mode = int(spec["mode"], 8) if spec.get("mode") else None
    if any(c["field"] == "content" for c in changes):
        atomic_write(path, spec["content"].encode("utf-8"), mode)
    apply_meta(path, spec)
