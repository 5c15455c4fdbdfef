"""A command guarded by `creates` or `unless`: it runs only while its guard does not hold."""

from __future__ import annotations

import os

from .. import procs
from ..protocol import Change, Context, ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    if spec.get("creates") and os.path.lexists(ctx.path(spec["creates"])):
        return {"guard_holds": True, "guard": "creates %s exists" % spec["creates"]}
    if spec.get("unless"):
        done = procs.run(spec["unless"], cwd=_cwd(spec, ctx), env=spec.get("env"))
        if done.ok:
            return {"guard_holds": True, "guard": "unless %s exits 0" % spec["unless"][0]}
        return {"guard_holds": False, "guard": "unless %s exits %d" % (spec["unless"][0], done.returncode)}
    return {"guard_holds": False, "guard": "creates %s does not exist" % spec.get("creates")}


def _cwd(spec: Dict[str, Any], ctx: Context) -> str:
    # Before the first apply the root may not exist yet; the guard then runs from "/".
    cwd = ctx.path(spec["cwd"]) if spec.get("cwd") else ctx.root
    for candidate in (cwd, ctx.root):
        if os.path.isdir(candidate):
            return candidate
    return "/"


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    if observed["guard_holds"]:
        return []
    return [Change("run", None, " ".join(spec["argv"]), observed["guard"], "run")]


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    cwd = ctx.path(spec["cwd"]) if spec.get("cwd") else ctx.root
    if not os.path.isdir(cwd):
        raise ResourceFailure("working directory %s does not exist" % cwd)
    done = procs.run(spec["argv"], cwd=cwd, env=spec.get("env"), stream=ctx.verbose)
    if not done.ok:
        raise ResourceFailure("command %s failed (exit %d):\n%s" % (spec["argv"][0], done.returncode, done.tail()))
