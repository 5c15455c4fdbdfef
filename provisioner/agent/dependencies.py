"""Which earlier resources a resource needs, read from the paths their specs name.

Resources arrive in the order they must be applied (roles after the roles they depend on, each role's
resources in order). When one fails, a later one is skipped only if it needs it:

- it lives inside what the failed one makes: a path of its own is at or under the failed one's path
  (a venv before its packages, a checkout before its requirements.txt and its plugins, a folder before
  its files; two pip resources on one venv share it, so a failed torch skips nunchaku);
- or it reads a whole tree the failed one writes into (pip's find-links folder holds the downloaded
  wheel);
- a command can touch anything: after a failed command everything is skipped, and a command after any
  failure is skipped too.

Everything else still runs, so one bad model URL does not stop ComfyUI's checkout or its service.
"""

from __future__ import annotations

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple


def _local(link: str) -> bool:
    return "://" not in link


def paths(resource: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """(paths the resource lives at or runs from, trees it reads whole), relative to the root."""
    spec = resource["spec"]
    kind = resource["kind"]
    links = [link for link in spec.get("find_links") or [] if _local(link)]
    if kind == "pip":
        return [spec["venv"]], links
    if kind == "requirements":
        return [spec["venv"], spec["file"]], links
    if kind == "service":
        own = [spec[key] for key in ("cwd", "env_file") if spec.get(key)]
        program = spec["argv"][0]
        if "/" in program and not program.startswith("/"):
            own.append(program)  # venv/bin/python: the service runs in that venv
        return own, []
    if kind == "command":
        return [spec[key] for key in ("cwd", "creates") if spec.get(key)], []
    if kind == "wheel_build":
        # It builds against the venv's torch: a failed torch install (or venv) skips the build.
        python = spec.get("python") or ""
        return [spec["path"], spec["workdir"]] + ([python] if python and not python.startswith("/") else []), []
    return [spec["path"]] if spec.get("path") else [], []


def _parts(path: str) -> Tuple[str, ...]:
    return tuple(p for p in path.split("/") if p not in ("", "."))


def _within(path: str, root: str) -> bool:
    """`path` is `root` or below it."""
    inner, outer = _parts(path), _parts(root)
    return inner[: len(outer)] == outer


def needs(later: Dict[str, Any], earlier: Dict[str, Any]) -> bool:
    """Whether `later` cannot be applied soundly when `earlier` did not converge."""
    if "command" in (later["kind"], earlier["kind"]):
        return True
    own, trees = paths(later)
    made = paths(earlier)[0]
    return any(_within(mine, theirs) for mine in own for theirs in made) or any(
        _within(theirs, tree) for tree in trees for theirs in made)


def blocker(resource: Dict[str, Any], broken: List[Dict[str, Any]]) -> Optional[str]:
    """The id of the first failed or skipped resource this one needs, or None when it can run."""
    for earlier in broken:
        if needs(resource, earlier):
            return str(earlier["id"])
    return None
