"""A directory with optional mode and ownership."""

from __future__ import annotations

import os

from ..fsutil import apply_meta, meta_changes, observe_meta
from ..protocol import Change, Context, ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.model_path(spec["path"])
    if not os.path.lexists(path):
        return {"exists": False}
    if not os.path.isdir(path) or os.path.islink(path):
        return {"exists": True, "is_dir": False}
    observed = {"exists": True, "is_dir": True}
    observed.update(observe_meta(path))
    return observed


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    if not observed["exists"]:
        return [Change("path", None, spec["path"], "directory does not exist", "create")]
    if not observed["is_dir"]:
        return [Change("type", "not a directory", "directory", "%s exists but is not a directory" % spec["path"])]
    return meta_changes(spec, observed)


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    path = ctx.model_path(spec["path"])
    if observed["exists"] and not observed["is_dir"]:
        raise ResourceFailure("%s exists and is not a directory; move it away first" % path)
    os.makedirs(path, exist_ok=True)
    apply_meta(path, spec)
