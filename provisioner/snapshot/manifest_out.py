"""The manifest an imported snapshot becomes: a complete stack manifest, or an overlay that extends one."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from provisioner.manifest.loader import LoadedManifest
from provisioner.snapshot.importer import SNAPSHOT_PIP_NAME, ImportResult


def _name_from(path: Path) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip("._-")
    return cleaned or "snapshot"


def _pip_resource(result: ImportResult, venv: str) -> dict[str, Any]:
    # no_deps: a snapshot is a whole `pip freeze`, so every dependency is pinned beside its dependent, except
    # the torch family left to the resolution; resolving dependencies again could only pull another torch
    # (an exact `torch==` requirement of some package). ComfyUI-Manager's restore falls back to --no-deps too.
    return {"kind": "pip", "name": SNAPSHOT_PIP_NAME, "venv": venv, "packages": result.packages, "no_deps": True}


def _header(snapshot_path: Path, notes: list[str]) -> str:
    lines = [f"# Imported from the ComfyUI-Manager snapshot {snapshot_path.name} (provision snapshot import)."]
    lines += [f"# - {note}" for note in notes]
    return "\n".join(lines) + "\n"


def standalone_manifest(result: ImportResult, snapshot_path: Path) -> str:
    """A whole-stack manifest (the comfyui-nunchaku role) holding the snapshot's pins."""
    comfyui: dict[str, Any] = {}
    if result.comfyui_ref:
        comfyui["ref"] = result.comfyui_ref
    comfyui["plugins"] = result.plugins
    document: dict[str, Any] = {"name": _name_from(snapshot_path), "roles": ["comfyui-nunchaku"], "comfyui": comfyui}
    if result.packages:
        document["resources"] = [_pip_resource(result, "venv")]
    return _header(snapshot_path, result.notes) + yaml.safe_dump(document, sort_keys=False, width=120)


def overlay_manifest(result: ImportResult, snapshot_path: Path, base: LoadedManifest, out_dir: Path) -> str:
    """A manifest that extends `base` (left as written) with the snapshot's pins.

    `extends` merges mappings and replaces lists, so the plugin and resource lists are written whole:
    the base's entries with the snapshot's pins, plus the snapshot's pip resource.
    """
    manifest = base.manifest
    comfyui: dict[str, Any] = {"plugins": result.plugins}
    if result.comfyui_ref:
        comfyui = {"ref": result.comfyui_ref, **comfyui}
    document: dict[str, Any] = {
        "extends": os.path.relpath(base.path.resolve(), out_dir.resolve()),
        "name": manifest.name,
        "comfyui": comfyui,
    }
    resources = [r.model_dump(mode="json", exclude_defaults=True) | {"kind": r.kind}
                 for r in manifest.resources
                 if not (r.kind == "pip" and getattr(r, "name", None) == SNAPSHOT_PIP_NAME)]
    if result.packages:
        resources.append(_pip_resource(result, manifest.python.venv))
    if resources:
        document["resources"] = resources
    return _header(snapshot_path, result.notes) + yaml.safe_dump(document, sort_keys=False, width=120)
