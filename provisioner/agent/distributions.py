"""Read what is installed in a venv straight from its *.dist-info folders (no subprocess)."""

from __future__ import annotations

import glob
import json
import os
import re

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Optional


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def site_packages(venv: str) -> list:  # type: ignore[type-arg]
    return sorted(glob.glob(os.path.join(venv, "lib", "python3*", "site-packages")))


def installed(venv: str) -> Dict[str, Dict[str, Any]]:
    """Normalized name -> {name, version, url, sha256, files_prefix} for every distribution in the venv."""
    found: Dict[str, Dict[str, Any]] = {}
    for site in site_packages(venv):
        for info in glob.glob(os.path.join(site, "*.dist-info")):
            meta = _metadata(os.path.join(info, "METADATA"))
            if not meta:
                continue
            name, version = meta
            entry: Dict[str, Any] = {"name": name, "version": version, "dist_info": info}
            entry.update(_direct_url(os.path.join(info, "direct_url.json")))
            found[normalize(name)] = entry
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
