"""Plan rows for removal (destroy / kept) and unmanaged entries, typed, and the folders plan watches."""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from provisioner.manifest.model import MODEL_FOLDERS

if TYPE_CHECKING:
    from provisioner.expand import HostResource
    from provisioner.manifest.model import Manifest


@dataclass(frozen=True)
class Removal:
    """A resource that goes (status destroy) or that would go but stays (status kept, with why)."""

    id: str
    kind: str
    key: str
    status: str
    bytes: int
    reason: str
    #: Large data kept because --prune was not given.
    large: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UnmanagedEntry:
    """Something in custom_nodes or a model folder that the manifest does not know: listed, never touched."""

    path: str
    kind: str
    bytes: int
    link: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def removals(rows: list[dict[str, Any]]) -> list[Removal]:
    return [Removal(r["id"], r["kind"], r["key"], r["status"], int(r.get("bytes") or 0), str(r.get("reason") or ""),
                    bool(r.get("large"))) for r in rows if r["status"] in ("destroy", "kept") and "kind" in r]


def unmanaged_entries(rows: Any) -> list[UnmanagedEntry]:
    return [UnmanagedEntry(str(r["path"]), str(r["kind"]), int(r["bytes"]), bool(r.get("link")))
            for r in rows or []]


def watched_folders(manifest: Manifest, resources: list[HostResource]) -> dict[str, Any]:
    """custom_nodes and the model folders: the stack's, and those the manifest's own resources write into."""
    custom_nodes: list[str] = []
    models: list[str] = []
    roots: list[str] = []
    comfy = manifest.comfyui
    if comfy is not None:
        custom_nodes.append(f"{comfy.path}/custom_nodes")
        models_dir = comfy.models_root or f"{comfy.path}/models"
        models += [f"{models_dir}/{folder}" for folder in MODEL_FOLDERS]
        if comfy.models_root:
            roots.append(comfy.models_root)
    for resource in resources:
        path = resource.spec.get("path")
        if not isinstance(path, str):
            continue
        # A resource that is such a folder, or that writes into one.
        for folder in (path.rstrip("/"), posixpath.dirname(path.rstrip("/"))):
            if posixpath.basename(folder) == "custom_nodes":
                custom_nodes.append(folder)
            elif _is_model_folder(folder):
                models.append(folder)
    return {"custom_nodes": sorted(set(custom_nodes)), "models": sorted(set(models)), "models_roots": roots,
            "model_folders": list(MODEL_FOLDERS)}


def _is_model_folder(path: str) -> bool:
    return posixpath.basename(path) in MODEL_FOLDERS and posixpath.basename(posixpath.dirname(path)) == "models"
