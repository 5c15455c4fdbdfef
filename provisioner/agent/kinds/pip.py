"""Package pins in a venv (exact, a release series `==X.Y.*`, or a bare name for any version), with
an optional required origin (wheel URL + sha256), and packages that must go when they are an unrelated
project of the same name (PyPI's `nunchaku` has no `nunchaku._C`).

Pins follow PEP 440: `torch==2.10.0` is met by `2.10.0+cu130`, `nunchaku==1.2.1+cu13.0torch2.10` only
by that build.
"""

from __future__ import annotations

import os
import re

from ..distributions import forget, installed, interrupted_installs, normalize, ships_module
from ..installers import IndexSettings, Installer, InstallPart, install_parts, installer_for, record_verified_hashes
from ..leftovers import sweep_pip_stash
from ..protocol import Change, Context, ResourceFailure
from ..specifiers import same_pin

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

_LABELLED = re.compile(r"^[^*+]+\+[A-Za-z0-9.]+$")


def _packages(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each pin as {name, extras, version, url, sha256}; version is '' for a bare name."""
    out = []
    for item in spec["packages"]:
        entry = item if isinstance(item, dict) else {"requirement": item}
        requirement = entry["requirement"]
        name_part, _, version = requirement.partition("==")
        name, _, extras = name_part.partition("[")
        out.append({
            "name": name.strip(), "extras": extras.rstrip("]"), "version": version.strip(),
            "url": entry.get("url"), "sha256": entry.get("sha256"),
        })
    return out


def _python(spec: Dict[str, Any], ctx: Context) -> Tuple[str, str]:
    venv = ctx.venv_path(spec["venv"])
    return venv, os.path.join(venv, "bin", "python")


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    venv, python = _python(spec, ctx)
    if not os.path.exists(python):
        return {"venv": False, "installed": {}, "interrupted": []}
    wanted = {normalize(p["name"]) for p in _packages(spec)} | {normalize(u["name"]) for u in _unrelated(spec)}
    dists = installed(venv)
    found = {k: v for k, v in dists.items() if k in wanted}
    for entry in _unrelated(spec):
        dist = found.get(normalize(entry["name"]))
        if dist is not None:
            dist["real"] = _is_real(dist, entry)
    return {"venv": True, "installed": found, "interrupted": interrupted_installs(venv)}


def interrupted_changes(observed: Dict[str, Any]) -> List[Change]:
    """A change for the installs a killed pip cut off in the venv (shared with requirements)."""
    cut_off = observed.get("interrupted") or []
    if not cut_off:
        return []
    listing = ", ".join("%s %s" % (d["name"], d["version"]) for d in cut_off)
    return [Change("interrupted", listing, None, "installed only in part (pip was killed during the install): %s; "
                   "installed again" % listing)]


def prepare_venv(venv: str, observed: Dict[str, Any]) -> None:
    """Before pip runs: clear what a killed pip left (its stash, the metadata of installs it cut off)."""
    sweep_pip_stash(venv)
    forget(observed.get("interrupted") or [])


def _unrelated(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    return list(spec.get("remove_unrelated") or [])


def _is_real(dist: Dict[str, Any], entry: Dict[str, Any]) -> bool:
    """The project the stack means ships the marker module; a local build (a local version label, which
    no index like PyPI serves, or an install from a checkout) is taken as real too and never removed."""
    return ("+" in dist["version"] or bool(dist.get("local_build"))
            or ships_module(dist, entry["marker_module"]))


def _unrelated_changes(spec: Dict[str, Any], observed: Dict[str, Any]) -> List[Change]:
    changes: List[Change] = []
    for entry in _unrelated(spec):
        dist = observed["installed"].get(normalize(entry["name"]))
        if dist is None or dist["real"]:
            continue
        reason = "%s %s (%s: no %s) will be removed" % (
            entry["name"], dist["version"], entry["label"], entry["marker_module"])
        changes.append(Change("package." + entry["name"], dist["version"], None, reason, "remove"))
    return changes


def notes(spec: Dict[str, Any], observed: Dict[str, Any]) -> List[str]:
    """Information only: a real build of a package this resource removes when unrelated is kept."""
    out = []
    for entry in _unrelated(spec):
        dist = observed["installed"].get(normalize(entry["name"])) if observed["venv"] else None
        if dist is not None and dist["real"]:
            out.append("%s %s is installed and is the real one (a local build or it ships %s); this manifest "
                       "installs none, so it is kept" % (entry["name"], dist["version"], entry["marker_module"]))
    return out


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    changes: List[Change] = _unrelated_changes(spec, observed) if observed["venv"] else []
    changes += interrupted_changes(observed)
    for pkg in _packages(spec):
        key = normalize(pkg["name"])
        have = observed["installed"].get(key)
        want = pkg["version"]
        field = "package." + pkg["name"]
        if have is None:
            reason = "not installed" if observed["venv"] else "venv %s does not exist yet" % spec["venv"]
            changes.append(Change(field, None, want or "any version", reason, "create"))
            continue
        if want and not same_pin(have["version"], want):
            reason = "installed version %s, pinned %s" % (have["version"], want)
            changes.append(Change(field, have["version"], want, reason))
            continue
        foreign = _foreign_reason(pkg, have)
        if foreign:
            changes.append(Change(field, "%s (%s)" % (have["version"], _origin(have)), want, foreign))
    return changes


def _origin(dist: Dict[str, Any]) -> str:
    return dist.get("url") or "a package index"


def _foreign_reason(pkg: Dict[str, Any], have: Dict[str, Any]) -> str:
    """Why an installed distribution of the right name and version is still not the one pinned."""
    if pkg["url"] and have.get("url") != pkg["url"]:
        return "foreign package of the same name: installed from %s, want %s" % (_origin(have), pkg["url"])
    if pkg["sha256"] and have.get("sha256") != pkg["sha256"]:
        return "foreign package of the same name: sha256 %s, want %s" % (
            (have.get("sha256") or "unrecorded")[:12], pkg["sha256"][:12])
    return ""


def _requirement(pkg: Dict[str, Any]) -> str:
    name = pkg["name"] + ("[%s]" % pkg["extras"] if pkg["extras"] else "")
    if pkg["url"]:
        fragment = "#sha256=" + pkg["sha256"] if pkg["sha256"] else ""
        return "%s @ %s%s" % (name, pkg["url"], fragment)
    # A bare name takes whatever version pip matches to the pins installed with it.
    return "%s==%s" % (name, pkg["version"]) if pkg["version"] else name


def index_settings(spec: Dict[str, Any], ctx: Context) -> IndexSettings:
    links = [link if "://" in link else ctx.path(link) for link in spec.get("find_links") or []]
    return IndexSettings(spec.get("index_url"), list(spec.get("extra_index_urls") or []), links,
                         bool(spec.get("no_deps")))


def index_args(spec: Dict[str, Any], ctx: Context) -> List[str]:
    return index_settings(spec, ctx).args()


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    part = prepare_install(spec, observed, changes, ctx)
    if part is not None:
        install_parts([part], stream=ctx.verbose)


def prepare_install(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change],
                    ctx: Context) -> Optional[InstallPart]:
    """Remove what must go first (unrelated and foreign packages); what is left to install, or None.
    The install itself may be shared with other steps on the venv (install_batch.py)."""
    venv, python = _python(spec, ctx)
    if not os.path.exists(python):
        raise ResourceFailure("venv %s does not exist; declare a venv resource before this pip resource" % spec["venv"])
    prepare_venv(venv, observed)
    installer = installer_for(spec, venv, ctx, index_args(spec, ctx))
    unrelated = [c["field"][len("package."):] for c in changes if c["action"] == "remove"]
    if unrelated:
        installer.uninstall(unrelated, ", ".join(unrelated))
    changed = {c["field"][len("package."):] for c in changes if c["action"] != "remove"}
    # After an interrupted install every pin goes to the installer: it reinstalls what was cut off among
    # them and the dependencies they miss.
    repair = any(c["field"] == "interrupted" for c in changes)
    todo = [p for p in _packages(spec) if p["name"] in changed or repair]
    if not todo:
        return None
    # Bare names were matched by the installer to the pins beside them (torchvision to torch): when a pin
    # moves, they go into the same run, so that they can move along with it.
    todo += [p for p in _packages(spec) if not p["version"] and not p["url"] and p not in todo]
    foreign = [p["name"] for p in todo if normalize(p["name"]) in observed["installed"]
               and (not p["version"] or same_pin(observed["installed"][normalize(p["name"])]["version"],
                                                 p["version"]))]
    if foreign:
        # Same name and version but the wrong origin: the installer would call it satisfied, so remove it first.
        installer.uninstall(foreign, "foreign " + ", ".join(foreign))
    verified = [(p["name"], p["url"], p["sha256"]) for p in todo if p["url"] and p["sha256"]]

    def record(used: Installer) -> None:
        if used.name == "uv" and verified:
            record_verified_hashes(venv, verified)

    return InstallPart("of " + ", ".join(p["name"] for p in todo), installer, [_requirement(p) for p in todo],
                       index_settings(spec, ctx), spec.get("constraints") or [], record,
                       own_index_only=own_index_only(spec))


def own_index_only(spec: Dict[str, Any]) -> bool:
    """Every pin names a build no other index can serve: a direct URL, or an exact version with a local
    label (torch==2.11.0+cu130; PyPI refuses uploads with local versions)."""
    packages = _packages(spec)
    return bool(packages) and all(p["url"] or _LABELLED.match(p["version"]) for p in packages)
