"""A Python virtual environment made with a given interpreter."""

from __future__ import annotations

import os
import re
import sys

from .. import leftovers, procs
from ..fsutil import atomic_write, remove_tree, which
from ..installers import PIP_ENV, ensurepip_wheels, run_uv_cache, uv_for_new_venv
from ..protocol import Change, Context, ResourceFailure, log

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

_VERSION_ONLY = re.compile(r"^3\.[0-9]+$")
RELOCATE_LIMIT = 1 << 20  # launchers and activate scripts are small; nothing larger names the venv's path


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
    path = ctx.venv_path(spec["path"])
    python = os.path.join(path, "bin", "python")
    version = _pyvenv_version(path)
    runs = version is not None and os.access(python, os.X_OK)
    return {
        "exists": os.path.lexists(path),
        "is_venv": runs,
        "pip": _pip_problem(path, python) if runs else None,
        "version": version,
        "system_site_packages": _system_site(path),
    }


def _pip_problem(path: str, python: str) -> Optional[str]:
    """Why the venv's pip does not work (None when it does): every pip and requirements resource needs it.

    pip's own install of itself (what `python -m venv` runs) writes INSTALLER and RECORD after every
    file: with both, pip is whole, and that costs no process. Metadata without them is an install that
    was cut off. No pip of its own (an older venv made --without-pip, pip from the system site) is
    decided by running it.
    """
    from ..distributions import interrupted_installs, site_packages

    for site in site_packages(path):
        if os.path.isfile(os.path.join(site, "pip", "__main__.py")):
            whole = [d for d in os.listdir(site) if d.startswith("pip-") and d.endswith(".dist-info")
                     and os.path.isfile(os.path.join(site, d, "INSTALLER"))
                     and os.path.isfile(os.path.join(site, d, "RECORD"))]
            if whole:
                return None
    cut_off = [d for d in interrupted_installs(path) if d["name"].lower() == "pip"]
    if cut_off:
        return "its pip %s was not installed completely (the install was interrupted)" % cut_off[0]["version"]
    done = procs.run([python, "-m", "pip", "--version"], env={"PYTHONNOUSERSITE": "1"}, timeout=60)
    return None if done.ok else "`python -m pip --version` fails: %s" % (done.tail().splitlines() or ["?"])[-1]


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
    if spec.get("adopt"):
        return _adopted_diff(spec, observed)
    want = _wanted_version(spec, ctx)
    if not observed["exists"]:
        return [Change("python", None, want, "venv does not exist", "create")]
    if not observed["is_venv"]:
        return [Change("venv", "not a venv", want, "%s exists but is not a working venv" % spec["path"])]
    if observed.get("pip"):
        reason = "%s is broken: %s; it will be rebuilt" % (spec["path"], observed["pip"])
        return [Change("venv", "broken", want, reason)]
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


def _adopted_diff(spec: Dict[str, Any], observed: Dict[str, Any]) -> List[Change]:
    """An adopted venv only has to work: its Python and its settings are its owner's business."""
    if not observed["exists"]:
        return [Change("venv", None, spec["path"], "the adopted venv %s does not exist: create it, or drop "
                       "python.adopt to let provision make its own venv under the root" % spec["path"], "create")]
    if not observed["is_venv"] or observed.get("pip"):
        why = observed.get("pip") or "it is not a working venv"
        return [Change("venv", "broken", spec["path"], "the adopted venv %s is broken (%s): repair it, or drop "
                       "python.adopt; provision never rebuilds someone else's venv" % (spec["path"], why))]
    return []


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    if spec.get("adopt"):
        raise ResourceFailure(changes[0]["reason"] if changes else "the adopted venv %s is not usable" % spec["path"])
    _build(spec, observed, ctx)


def _build(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> None:
    """Build the venv in a staging folder beside it and rename it into place: a run killed half-way leaves
    the old venv (or none) at the path, never a venv without a whole pip."""
    path = ctx.owned_path(spec["path"])
    interpreter = resolve_interpreter(spec.get("python") or "python3", ctx)["path"]
    staging = leftovers.staging_path(path)
    remove_tree(staging)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    argv = [interpreter, "-m", "venv"]
    if spec.get("system_site_packages"):
        argv.append("--system-site-packages")
    uv = uv_for_new_venv(str(spec.get("installer") or "pip"), interpreter, staging, spec.get("index_url"), ctx)
    if uv is None or not _made_with_uv(argv, interpreter, staging, uv, ctx):
        remove_tree(staging)
        done = procs.run([*argv, staging], stream=ctx.verbose)
        if not done.ok:
            remove_tree(staging)
            hint = ""
            if "ensurepip" in done.output or "venv" in done.output:
                hint = ("\nhint: install the venv module for that interpreter (Debian/Ubuntu: apt-get install "
                        "python3-venv)")
            raise ResourceFailure("creating venv %s failed (exit %d):\n%s%s" % (path, done.returncode, done.tail(),
                                                                              hint))
    try:
        _relocate(staging, path)
    except OSError as exc:
        remove_tree(staging)
        raise ResourceFailure("cannot move the new venv into %s: %s" % (path, exc)) from None
    aside = None
    if observed["exists"]:
        aside = leftovers.aside_path(path)
        os.rename(path, aside)
    os.rename(staging, path)
    if aside:
        leftovers.discard(aside)  # a folder, or whatever else stood in the venv's place


def _made_with_uv(argv: List[str], interpreter: str, staging: str, uv: str, ctx: Context) -> bool:
    """`python -m venv --without-pip`, then uv installs the wheels ensurepip would have: the same venv in
    a fraction of the time (ensurepip runs pip to install pip, compiling it; 6 s on a 2-core host)."""
    wheels = ensurepip_wheels(interpreter)
    if not wheels or not procs.run([*argv, "--without-pip", staging]).ok:
        return False
    done = procs.run([uv, "pip", "install", "--python", os.path.join(staging, "bin", "python"), "--no-config",
                      "--no-index", "--link-mode", "copy", "--cache-dir", run_uv_cache(ctx), *wheels],
                     env=PIP_ENV)
    if not done.ok:
        log("uv could not install the interpreter's own pip (exit %d), so the venv is made by python -m venv:\n%s"
            % (done.returncode, done.tail()))
    return done.ok


def _relocate(staging: str, path: str) -> None:
    """Point what a venv writes its own location into (activate scripts, pip's launchers, pyvenv.cfg) at
    `path`, before the rename makes it true. The interpreter links and site-packages name no location."""
    old, new = staging.encode(), path.encode()
    bin_dir = os.path.join(staging, "bin")
    names = [os.path.join(bin_dir, name) for name in os.listdir(bin_dir)] + [os.path.join(staging, "pyvenv.cfg")]
    for name in names:
        if os.path.islink(name) or not os.path.isfile(name) or os.path.getsize(name) > RELOCATE_LIMIT:
            continue
        with open(name, "rb") as handle:
            data = handle.read()
        if old in data:
            mode = os.stat(name).st_mode & 0o7777
            atomic_write(name, data.replace(old, new), mode)
