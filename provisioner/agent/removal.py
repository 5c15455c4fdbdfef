"""Removal: what a `state: absent` resource, or one an earlier generation created and the manifest dropped,
still holds on the host (with its bytes), and taking it away.

Paths stay confined: the parent of a removed path must resolve inside the root, and the path itself is
looked at with lstat, so a link is removed as a link and never followed (nor is any link inside a removed
folder). A folder is first renamed aside (a name the leftovers sweep knows), then deleted: a kill between
the two leaves nothing in use, and the next apply sweeps the rest.
"""

from __future__ import annotations

import os
import stat

from . import leftovers
from .distributions import installed, normalize
from .fsutil import human_size
from .protocol import Change, Context, ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Set

#: A download at least this big is large data: removed only by `state: absent` or --prune.
LARGE_BYTES = 1 << 30
#: Never uninstalled because a pip resource was dropped (only by that resource's `state: absent`).
PROTECTED_PACKAGES = ("torch", "torchvision", "torchaudio", "triton", "pip", "setuptools", "wheel")
PATH_KINDS = ("directory", "file", "envfile", "venv", "git", "download")


def leaf_path(ctx: Context, relative: str) -> str:
    """The absolute path of `relative`: its parent confined to the root, the last component not followed."""
    parent, name = os.path.split(relative.rstrip("/"))
    if not name or name in (".", ".."):
        raise ResourceFailure("path %r cannot be removed: it is the target root or escapes it" % relative)
    base = ctx.path(parent) if parent else ctx.root
    return os.path.join(base, name)


def tree_bytes(path: str) -> int:
    """Bytes of the files under `path`, links counted as links (never followed)."""
    total = 0
    for folder, dirs, files in os.walk(path, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def footprint(resource: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """What the resource still holds on the host; `exists` False when nothing is left."""
    kind, spec = resource["kind"], resource["spec"]
    if kind in PATH_KINDS:
        observed = _path_footprint(kind, leaf_path(ctx, spec["path"]))
        if kind == "git" and observed.get("is_dir") and not observed.get("link"):
            observed["modified"] = _modified(observed["path"])
        return observed
    if kind == "pip":
        venv = ctx.path(spec["venv"])
        names = [_name(p) for p in spec.get("packages") or []]
        have = installed(venv) if os.path.exists(os.path.join(venv, "bin", "python")) else {}
        present = sorted(n for n in names if normalize(n) in have)
        return {"exists": bool(present), "packages": present, "venv": venv, "bytes": 0}
    if kind == "service":
        from .kinds import service

        observed = service.probe(spec, ctx)
        exists = bool(observed.get("running") or observed.get("record") or observed.get("unit"))
        return {"exists": exists, "service": observed, "bytes": 0}
    return {"exists": False, "bytes": 0}  # requirements, command: nothing of their own to take away


def _path_footprint(kind: str, path: str) -> Dict[str, Any]:
    partial = path + ".part" if kind == "download" else None
    partial_bytes = os.path.getsize(partial) if partial and os.path.isfile(partial) else 0
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": bool(partial_bytes), "path": path, "bytes": partial_bytes, "is_dir": False}
    if stat.S_ISLNK(st.st_mode):
        return {"exists": True, "path": path, "bytes": 0, "link": True, "is_dir": False}
    if stat.S_ISDIR(st.st_mode):
        return {"exists": True, "path": path, "bytes": tree_bytes(path), "is_dir": True}
    return {"exists": True, "path": path, "bytes": st.st_size + partial_bytes, "is_dir": False}


def _modified(path: str) -> List[str]:
    """Tracked files changed and untracked files in a checkout (ignored ones are not the user's work)."""
    from . import procs

    if not os.path.isdir(os.path.join(path, ".git")):
        return []
    done = procs.run(["git", "-C", path, "status", "--porcelain", "--untracked-files=all"])
    if not done.ok:
        return []
    # Bytecode ComfyUI's imports leave in a plugin without a .gitignore is not work.
    return [line[3:] for line in done.output.splitlines()
            if line.strip() and "__pycache__/" not in line and not line.endswith(".pyc")]


def _name(package: Any) -> str:
    requirement = package["requirement"] if isinstance(package, dict) else package
    return str(requirement).split("==")[0].split("[")[0].strip()


def is_large(resource: Dict[str, Any], observed: Dict[str, Any], request: Dict[str, Any]) -> bool:
    """Model files (anything in a model folder or a models root) and downloads of LARGE_BYTES or more."""
    path = resource["spec"].get("path")
    if resource["kind"] == "download" and observed.get("bytes", 0) >= LARGE_BYTES:
        return True
    if not isinstance(path, str):
        return False
    return in_model_folder(path, request)


def in_model_folder(path: str, request: Dict[str, Any]) -> bool:
    watch = request.get("watch") or {}
    folders = set(watch.get("model_folders") or [])
    parts = path.strip("/").split("/")
    if any(parts[i] == "models" and parts[i + 1] in folders for i in range(len(parts) - 2)):
        return True
    return any(path.startswith(root.rstrip("/") + "/") for root in watch.get("models_roots") or [])


def protected_packages(request: Dict[str, Any]) -> Set[str]:
    """Packages a dropped pip resource leaves: torch and its kin, and every pin or constraint still wanted."""
    names = {normalize(n) for n in PROTECTED_PACKAGES}
    for resource in request["resources"]:
        spec = resource["spec"]
        if resource["kind"] in ("pip", "requirements") and spec.get("state") != "absent":
            for item in list(spec.get("packages") or []) + list(spec.get("constraints") or []):
                names.add(normalize(_name(item)))
    return names


def row(resource: Dict[str, Any], ctx: Context, request: Dict[str, Any], explicit: bool,
        going: Optional[List[str]] = None) -> Dict[str, Any]:
    """The plan row of a resource to remove: status destroy, kept (with why) or ok (nothing left)."""
    observed = footprint(resource, ctx)
    kind = resource["kind"]
    base = {"id": resource["id"], "kind": kind, "key": resource["id"].split(":", 1)[1], "changes": [],
            "observed": observed, "bytes": observed.get("bytes", 0), "large": False}
    if not observed["exists"]:
        return dict(base, status="ok", reason="nothing left on the host")
    why = "state: absent in the manifest" if explicit else "no longer in the manifest (created by generation %s)" % (
        resource.get("generation") or "?")
    packages = observed.get("packages") or []
    if kind == "pip" and not explicit:
        keep = protected_packages(request)
        packages = [p for p in packages if normalize(p) not in keep and not normalize(p).startswith("nvidia-")]
        observed["packages"] = packages
        if not packages:
            return dict(base, status="ok", reason="every package it installed is still wanted (or is torch's)")
    kept = _kept_reason(resource, observed, request, explicit, going or [])
    size = human_size(observed.get("bytes"))
    what = _what(kind, observed, packages)
    if kept:
        return dict(base, status="kept", reason=kept, large=kept.startswith("would remove with --prune"))
    change = Change("destroy", what, None, "%s; %s go" % (why, size) if observed.get("bytes") else why, "destroy")
    return dict(base, status="destroy", reason=why, changes=[change])


def _what(kind: str, observed: Dict[str, Any], packages: List[str]) -> str:
    if kind == "pip":
        return "packages " + ", ".join(packages)
    if kind == "service":
        return "the service (stopped through its record) and its record/unit"
    if observed.get("link"):
        return "the link itself (not followed)"
    return "%s (%s)" % ("folder" if observed.get("is_dir") else "file", human_size(observed.get("bytes")))


def _kept_reason(resource: Dict[str, Any], observed: Dict[str, Any], request: Dict[str, Any], explicit: bool,
                 going: List[str]) -> Optional[str]:
    modified = observed.get("modified") or []
    if modified and not (request.get("options") or {}).get("force"):
        return "checkout has local work (%d files changed or untracked, e.g. %s); --force removes it" % (
            len(modified), modified[0])
    if explicit:
        return None
    if is_large(resource, observed, request) and not (request.get("options") or {}).get("prune"):
        return "would remove with --prune: %s (large data is removed only with --prune or state: absent)" % (
            human_size(observed.get("bytes")))
    if resource["kind"] == "directory" and observed.get("is_dir") and not observed.get("link"):
        left = _left_after(observed["path"], going)
        if left:
            return "folder not empty (%d entries stay, e.g. %s); remove them or declare it state: absent" % (
                len(left), left[0])
    return None


def _left_after(folder: str, going: List[str]) -> List[str]:
    """Entries under `folder` that no other removal of this run takes away."""
    left = []
    for parent, dirs, files in os.walk(folder, followlinks=False):
        for name in files + dirs:
            full = os.path.join(parent, name)
            if any(full == g or full.startswith(g + os.sep) for g in going):
                continue
            if name in dirs and any(g.startswith(full + os.sep) for g in going):
                continue  # a folder that empties when what is inside it goes
            left.append(os.path.relpath(full, folder))
        dirs[:] = [d for d in dirs if not any(os.path.join(parent, d) == g for g in going)]
    return left


def destroy(resource: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> None:
    kind = resource["kind"]
    if kind in PATH_KINDS:
        _remove_path(observed)
    elif kind == "pip":
        from . import procs

        python = os.path.join(observed["venv"], "bin", "python")
        procs.check([python, "-m", "pip", "--disable-pip-version-check", "--no-input", "uninstall", "-y",
                     *observed["packages"]], "pip uninstall of %s" % ", ".join(observed["packages"]),
                    env={"PYTHONNOUSERSITE": "1"})
    elif kind == "service":
        from .kinds import service

        service.remove(resource["spec"], observed["service"], ctx)


def _remove_path(observed: Dict[str, Any]) -> None:
    path = observed["path"]
    partial = path + ".part"
    if os.path.isfile(partial) and not os.path.islink(partial):
        os.unlink(partial)
    if not os.path.lexists(path):
        return
    if not observed.get("is_dir") or os.path.islink(path):
        os.unlink(path)
        return
    aside = leftovers.aside_path(path)
    os.rename(path, aside)  # atomic: the path is gone at once; the files go after
    leftovers.discard(aside)
