"""What an apply writes before it is in place, named so that the next run can clear what a killed run left.

A run's temp files (`.provision-tmp-<owner>-*`, beside the file they replace), staging folders
(`<path>.provision-staging-<owner>`, switched in by a rename), the old copy it moves aside
(`<path>.provision-old-<owner>`) and the temp folder of the programs it runs (`.provision/tmp/<owner>`)
all carry the writer's identity: `<pid>.<start time>` (the start time in clock ticks since boot, from
/proc). So a run can tell a leftover of a dead one from the work of one still going (another apply on
the same root), and a recycled PID does not pass for its dead owner. SIGKILL gives no chance to clean
up: every apply starts by sweeping what dead owners left near the paths it manages.

pip's own stash (`~name` beside an uninstalled package in site-packages) lives only while a pip run
lasts; the sweep removes it from the venvs of this apply, where pip runs only under an apply.
"""

from __future__ import annotations

import contextlib
import os
import re

from .protocol import Context

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Set

MARK = ".provision-"
_OWNED = re.compile(r"\.provision-(?:tmp|staging|old)-([0-9]+)\.([0-9]+)(?:-|$)")
_RUN_TEMP = re.compile(r"^([0-9]+)\.([0-9]+)$")
_owner: List[str] = []


def _start_time(pid: int) -> Optional[str]:
    """The process's start time (field 22 of /proc/PID/stat), None when it is not running."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def owner() -> str:
    """This process's identity as it appears in the names above."""
    if not _owner:
        _owner.append("%d.%s" % (os.getpid(), _start_time(os.getpid()) or "0"))
    return _owner[0]


def _alive(pid: str, started: str) -> bool:
    if "%s.%s" % (pid, started) == owner():
        return True
    if not os.path.isdir("/proc/self"):
        # No /proc: a PID that answers signal 0 is taken as alive (never sweep a live run's work).
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _start_time(int(pid)) == started


def temp_prefix() -> str:
    """Prefix for a temp file written beside its target and renamed over it."""
    return "%stmp-%s-" % (MARK, owner())


def staging_path(path: str) -> str:
    """Where a folder (a venv, a clone) is built before it is renamed to `path`."""
    return "%s%sstaging-%s" % (path, MARK, owner())


def aside_path(path: str) -> str:
    """Where the folder at `path` waits while its replacement is switched in."""
    return "%s%sold-%s" % (path, MARK, owner())


def run_temp_dir(ctx: Context) -> str:
    """This run's folder for the temp files of the programs it runs (pip unpacks wheels there)."""
    path = os.path.join(_temp_root(ctx), owner())
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _temp_root(ctx: Context) -> str:
    return os.path.join(ctx.state_dir(), "tmp")


def is_stale(name: str) -> bool:
    """Whether `name` is a temp file, staging or aside folder of a run that is no longer running."""
    match = _OWNED.search(name)
    return match is not None and not _alive(match.group(1), match.group(2))


def sweep(ctx: Context, resources: List[Dict[str, Any]]) -> List[str]:
    """Remove what killed runs left near the resources' paths and in the state folder; the paths removed."""
    removed: List[str] = []
    for folder in sorted(_folders(ctx, resources)):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if MARK in name and is_stale(name):
                removed.append(discard(os.path.join(folder, name)))
    removed += _sweep_run_temps(ctx)
    # uv's shared cache of earlier versions (files copied out of it, so nothing links to it): GBs of torch
    # that no run reads since uv caches per run (installers.py).
    old_cache = os.path.join(ctx.state_dir(), "cache", "uv")
    if os.path.isdir(old_cache) and not os.path.islink(old_cache):
        removed.append(discard(old_cache))
    for resource in resources:
        if resource["kind"] == "venv":
            removed += sweep_pip_stash(safe_path(ctx, resource["spec"]["path"]))
    return removed


def sweep_pip_stash(venv: Optional[str]) -> List[str]:
    """pip's stash of an uninstall it did not finish (`~rch`, `~orch-2.9.1.dist-info`) in a venv."""
    import glob

    if not venv:
        return []
    return [discard(path) for site in glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
            for path in glob.glob(os.path.join(site, "~*"))]


def _sweep_run_temps(ctx: Context) -> List[str]:
    root = _temp_root(ctx)
    try:
        names = os.listdir(root)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _RUN_TEMP.match(name)
        if match and not _alive(match.group(1), match.group(2)):
            removed.append(discard(os.path.join(root, name)))
    return removed


def begin(ctx: Context, resources: List[Dict[str, Any]]) -> None:
    """Start an apply: sweep what killed runs left, give the programs it runs a temp folder of this run's
    (removed at exit), so that a kill leaves nothing in the host's /tmp either."""
    import atexit

    from . import procs

    sweep(ctx, resources)
    procs.use_temp_dir(run_temp_dir(ctx))
    atexit.register(_finish, ctx)


def _finish(ctx: Context) -> None:
    discard(os.path.join(_temp_root(ctx), owner()))
    with contextlib.suppress(OSError):
        os.rmdir(_temp_root(ctx))  # only when no other run has one


def _folders(ctx: Context, resources: List[Dict[str, Any]]) -> Set[str]:
    """The folders a run writes temp files or staging folders into: each managed path's parent, the
    state folder and its subfolders."""
    folders = {ctx.state_dir()}
    with contextlib.suppress(OSError):
        folders.update(os.path.join(ctx.state_dir(), name) for name in os.listdir(ctx.state_dir()))
    for resource in resources:
        spec = resource["spec"]
        for key in ("path", "file", "env_file"):
            full = safe_path(ctx, spec.get(key))
            if full:
                folders.add(os.path.dirname(full))
    return {f for f in folders if os.path.isdir(f) and not os.path.islink(f)}


def safe_path(ctx: Context, relative: Any) -> Optional[str]:
    from .protocol import ResourceFailure

    if not isinstance(relative, str) or not relative:
        return None
    try:
        return ctx.path(relative)
    except ResourceFailure:
        return None  # the resource's own probe reports the bad path


def discard(path: str) -> str:
    """Remove a file, link or folder (a link itself, never what it points to); the path."""
    if os.path.isdir(path) and not os.path.islink(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return path
