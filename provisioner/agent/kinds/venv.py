"""A Python virtual environment made with a given interpreter."""

from __future__ import annotations

import os
import re
import sys
import time

from .. import procs
from ..fsutil import remove_tree, which
from ..protocol import Change, Context, ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

_VERSION_ONLY = re.compile(r"^3\.[0-9]+$")


def _pyvenv_version(path: str) -> Optional[str]:
    cfg = os.path.join(path, "pyvenv.cfg")
    try:
        with open(cfg, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() in ("version", "version_info"):
                    return value.strip()
    except OSError:
        return None
    return None


def resolve_interpreter(requested: str, ctx: Context) -> Dict[str, str]:
    """Find the interpreter for `requested` ('3.11', 'python3.11' or a path) and its full version."""
    if requested in ctx.interpreter_cache:
        return ctx.interpreter_cache[requested]  # type: ignore[no-any-return]
    command = "python" + requested if _VERSION_ONLY.match(requested) else requested
    found = command if os.path.isabs(command) else which(command)
    if not found or not os.access(found, os.X_OK):
        if _VERSION_ONLY.match(requested):
            hint = "apt-get install python%s python%s-venv" % (requested, requested)
        else:
            hint = "install it or point the venv's `python` at an existing interpreter"
        raise ResourceFailure("interpreter %r not found on the host; %s" % (command, hint))
    if os.path.realpath(found) == os.path.realpath(sys.executable):
        version = "%d.%d.%d" % sys.version_info[:3]  # the agent's own interpreter: no need to start it
    else:
        done = procs.run([found, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        if not done.ok:
            raise ResourceFailure("interpreter %s does not run: %s" % (found, done.tail()))
        version = done.output.strip().splitlines()[-1]
    info = {"path": found, "version": version}
    ctx.interpreter_cache[requested] = info
    return info


def _major_minor(version: Optional[str]) -> Optional[str]:
    if not version:
        return None
    return ".".join(version.split(".")[:2])


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.path(spec["path"])
    python = os.path.join(path, "bin", "python")
    version = _pyvenv_version(path)
    return {
        "exists": os.path.lexists(path),
        "is_venv": version is not None and os.path.exists(python),
        "version": version,
        "system_site_packages": _system_site(path),
    }


def _system_site(path: str) -> Optional[bool]:
    try:
        with open(os.path.join(path, "pyvenv.cfg"), encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() == "include-system-site-packages":
                    return value.strip().lower() == "true"
    except OSError:
        return None
    return None


def _wanted_version(spec: Dict[str, Any], ctx: Context) -> str:
    requested = spec.get("python") or "python3"
    if _VERSION_ONLY.match(requested):
        return requested
    return _major_minor(resolve_interpreter(requested, ctx)["version"]) or requested


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    want = _wanted_version(spec, ctx)
    if not observed["exists"]:
        return [Change("python", None, want, "venv does not exist", "create")]
    if not observed["is_venv"]:
        return [Change("venv", "not a venv", want, "%s exists but is not a working venv" % spec["path"])]
    changes = []
    have = _major_minor(observed["version"])
    if have != want:
        reason = "venv uses Python %s, want %s; it will be recreated" % (have, want)
        changes.append(Change("python", have, want, reason))
    want_site = bool(spec.get("system_site_packages"))
    if observed["system_site_packages"] != want_site:
        changes.append(Change("system_site_packages", observed["system_site_packages"], want_site,
                              "system site packages setting differs; the venv will be recreated"))
    return changes


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    path = ctx.owned_path(spec["path"])
    interpreter = resolve_interpreter(spec.get("python") or "python3", ctx)["path"]
    aside = None
    if observed["exists"]:
        # Keep the old venv until the new one is built, so a failed rebuild can be undone.
        aside = "%s.provision-old-%d" % (path, int(time.time() * 1000))
        os.rename(path, aside)
    argv = [interpreter, "-m", "venv"]
    if spec.get("system_site_packages"):
        argv.append("--system-site-packages")
    done = procs.run([*argv, path], stream=ctx.verbose)
    if not done.ok:
        remove_tree(path)
        if aside:
            os.rename(aside, path)
        hint = ""
        if "ensurepip" in done.output or "venv" in done.output:
            hint = "\nhint: install the venv module for that interpreter (Debian/Ubuntu: apt-get install python3-venv)"
        raise ResourceFailure("creating venv %s failed (exit %d):\n%s%s" % (path, done.returncode, done.tail(), hint))
    if aside:
        remove_tree(aside)
