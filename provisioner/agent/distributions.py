"""Read what is installed in a venv straight from its *.dist-info folders (no subprocess)."""

from __future__ import annotations

import glob
import json
import os
import re

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def site_packages(venv: str) -> list:  # type: ignore[type-arg]
    return sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages")))


def installed(venv: str) -> Dict[str, Dict[str, Any]]:
    """Normalized name -> {name, version, url, sha256, files_prefix} for every distribution in the venv
    that was installed completely (see `interrupted_installs` for the others)."""
    found: Dict[str, Dict[str, Any]] = {}
    for entry in _dist_infos(venv):
        if _complete(entry["dist_info"]):
            entry.update(_direct_url(os.path.join(entry["dist_info"], "direct_url.json")))
            found[normalize(entry["name"])] = entry
    return found


def interrupted_installs(venv: str) -> List[Dict[str, Any]]:
    """Distributions whose install was cut off (pip killed): metadata in place, the install not finished.

    pip extracts a wheel's files in archive order (the .dist-info comes last), then compiles bytecode and
    writes the console scripts, and only then INSTALLER and the final RECORD. Metadata without both is
    what a killed pip leaves: pip itself would call it installed and skip it, and uninstalling it fails
    for want of a RECORD, so its .dist-info is removed before pip runs again (`forget`).
    """
    return [entry for entry in _dist_infos(venv) if not _complete(entry["dist_info"])]


def forget(dists: List[Dict[str, Any]]) -> None:
    """Remove the .dist-info of interrupted installs, so that pip installs them again over their files."""
    import shutil

    for dist in dists:
        shutil.rmtree(dist["dist_info"], ignore_errors=True)


def _complete(info: str) -> bool:
    return os.path.isfile(os.path.join(info, "RECORD")) and os.path.isfile(os.path.join(info, "INSTALLER"))


def _dist_infos(venv: str) -> List[Dict[str, Any]]:
    found = []
    for site in site_packages(venv):
        for info in glob.glob(os.path.join(site, "*.dist-info")):
            if os.path.basename(info).startswith("~"):
                continue  # pip's stash of an uninstall in progress (or killed): not installed
            meta = _metadata(os.path.join(info, "METADATA"))
            if meta:
                found.append({"name": meta[0], "version": meta[1], "dist_info": info})
    return found


def _metadata(path: str) -> Optional[tuple]:  # type: ignore[type-arg]
    name = version = None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
    except OSError:
        return None
    if name and version:
        return name, version
    return None


def _direct_url(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {"url": None, "sha256": None, "local_build": False}
    archive = data.get("archive_info") or {}
    sha = (archive.get("hashes") or {}).get("sha256")
    if not sha and str(archive.get("hash", "")).startswith("sha256="):
        sha = archive["hash"][len("sha256="):]
    # Built here from a checkout or a folder (pip install git+..., pip install -e .), not fetched as a wheel.
    local_build = "vcs_info" in data or "dir_info" in data
    return {"url": data.get("url"), "sha256": sha, "local_build": local_build}


def ships_module(dist: Dict[str, Any], module: str) -> bool:
    """Whether the distribution's RECORD lists `module` (a.b._C) as a file or package: `a/b/_C.*.so`, `a/b/_C/`."""
    stem = module.replace(".", "/")
    try:
        with open(os.path.join(dist["dist_info"], "RECORD"), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                path = line.split(",", 1)[0].strip('"')
                if path.startswith(stem) and path[len(stem):len(stem) + 1] in (".", "/"):
                    return True
    except OSError:
        pass
    return False
