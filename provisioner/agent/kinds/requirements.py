"""A requirements.txt (ComfyUI's, a plugin's) installed into a venv, with constraints that keep
pip from replacing what is pinned elsewhere (torch).

Drift: a listed package missing or outside its specifier, or the file changed since it was last
installed (its sha256 is recorded on success).
"""

from __future__ import annotations

import hashlib
import json
import os

from ..distributions import installed, interrupted_installs, normalize
from ..fsutil import atomic_write
from ..installers import Installer, InstallPart, install_parts, installer_for
from ..protocol import Change, Context, ResourceFailure
from ..specifiers import parse_line, satisfies
from .pip import index_args, index_settings, interrupted_changes, prepare_venv

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List


def _marker(spec: Dict[str, Any], ctx: Context) -> str:
    key = hashlib.sha256(("%s|%s" % (spec["venv"], spec["file"])).encode()).hexdigest()[:16]
    return ctx.state_path("requirements", key + ".json")


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.path(spec["file"])
    venv = ctx.venv_path(spec["venv"])
    if not os.path.isfile(path):
        return {"file": False, "venv": os.path.exists(os.path.join(venv, "bin", "python"))}
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    from ..statedir import read_text

    try:
        recorded = json.loads(read_text(_marker(spec, ctx)) or "{}").get("sha256")
    except (ValueError, AttributeError):
        recorded = None
    dists = installed(venv)
    unmet = []
    for line in text.splitlines():
        parsed = parse_line(line)
        if parsed is None:
            continue
        name, clauses, judgeable = parsed
        dist = dists.get(normalize(name))
        if dist is None:
            unmet.append("%s (missing)" % name)
        elif judgeable and clauses and not satisfies(dist["version"], clauses):
            unmet.append("%s %s (have %s)" % (name, ",".join(op + v for op, v in clauses), dist["version"]))
    return {"file": True, "venv": os.path.exists(os.path.join(venv, "bin", "python")),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "recorded": recorded, "unmet": unmet,
            "interrupted": interrupted_installs(venv)}


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    if not observed["file"]:
        return [Change("file", None, spec["file"], "%s does not exist yet" % spec["file"], "create")]
    changes = interrupted_changes(observed)
    if observed["unmet"]:
        shown = ", ".join(observed["unmet"][:6]) + (" …" if len(observed["unmet"]) > 6 else "")
        changes.append(Change("packages", None, None, "unmet: " + shown,
                              "create" if observed["recorded"] is None else "update"))
    elif observed["recorded"] != observed["sha256"]:
        reason = "not installed from this file yet" if observed["recorded"] is None else "the file changed"
        changes.append(Change("file", (observed["recorded"] or "")[:12] or None, observed["sha256"][:12], reason,
                              "create" if observed["recorded"] is None else "update"))
    return changes


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    install_parts([prepare_install(spec, observed, changes, ctx)], stream=ctx.verbose)


def prepare_install(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change],
                    ctx: Context) -> InstallPart:
    """What to install for the file (its install may be shared with other steps on the venv:
    install_batch.py); once installed, the file's digest is recorded."""
    venv = ctx.venv_path(spec["venv"])
    python = os.path.join(venv, "bin", "python")
    path = ctx.path(spec["file"])
    if not os.path.exists(python):
        raise ResourceFailure("venv %s does not exist; declare it before %s" % (spec["venv"], spec["file"]))
    if not os.path.isfile(path):
        raise ResourceFailure("%s does not exist; the checkout that provides it must come first" % spec["file"])
    prepare_venv(venv, observed)
    installer = installer_for(spec, venv, ctx, index_args(spec, ctx))
    # The digest of what the installer reads now: a file that changes during the run shows as drift after.
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()

    def record(_: Installer) -> None:
        atomic_write(_marker(spec, ctx), json.dumps({"sha256": digest, "file": spec["file"]}).encode("utf-8"), 0o644)

    return InstallPart("-r %s" % spec["file"], installer, ["-r", path], index_settings(spec, ctx),
                       spec.get("constraints") or [], record)
