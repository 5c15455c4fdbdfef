"""Who provides each node class a workflow uses: ComfyUI itself, a catalog plugin (at which releases),
the frontend alone, or nobody the catalog knows."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from provisioner.catalog import Catalog, parse_version, version_key
from provisioner.workflow.parse import WorkflowNode

Provider = Literal["comfyui", "frontend", "plugin", "unknown"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComfyUISnapshot(_Data):
    version: str
    commit: str
    source: str


class LoaderFile(_Data):
    input: str
    index: int = Field(ge=0)
    folder: str


class Loader(_Data):
    files: list[LoaderFile]
    source: str


class Replacement(_Data):
    model: str
    files: list[str]


class NodeCatalog(_Data):
    """provisioner/catalog/comfyui_nodes.yaml."""

    comfyui: ComfyUISnapshot
    core_nodes: dict[str, list[str]]
    frontend_nodes: list[str]
    loaders: dict[str, Loader]
    replacements: list[Replacement]

    def core(self) -> set[str]:
        return {name for names in self.core_nodes.values() for name in names}


@lru_cache(maxsize=1)
def load_node_catalog() -> NodeCatalog:
    text = resources.files("provisioner.catalog").joinpath("comfyui_nodes.yaml").read_text(encoding="utf-8")
    return NodeCatalog.model_validate(yaml.safe_load(text))


@dataclass(frozen=True)
class NodeUse:
    """One node class of the workflow and who provides it."""

    class_type: str
    count: int
    provider: Provider
    detail: str
    plugin: str | None = None
    plugin_versions: tuple[str, ...] = ()
    #: The oldest ComfyUI version an instance says it was saved with (properties.ver of a comfy-core node):
    #: the node is known to exist there, and perhaps earlier.
    saved_with: str | None = None


def plugin_versions(catalog: Catalog, class_type: str) -> list[str]:
    """The ComfyUI-nunchaku releases that register `class_type`, oldest first."""
    return [r.version for r in sorted(catalog.plugin_releases(), key=lambda r: version_key(r.version))
            if class_type in catalog.plugin_nodes(r)]


def node_uses(nodes: list[WorkflowNode], catalog: Catalog) -> list[NodeUse]:
    data = load_node_catalog()
    core, frontend = data.core(), set(data.frontend_nodes)
    by_class: dict[str, list[WorkflowNode]] = {}
    for node in nodes:
        by_class.setdefault(node.class_type, []).append(node)
    uses = []
    for class_type, instances in sorted(by_class.items()):
        claims = [n.version for n in instances if n.cnr_id == "comfy-core" and n.version and parse_version(n.version)]
        saved_with = min(claims, key=version_key) if claims else None
        count = len(instances)
        versions = plugin_versions(catalog, class_type)
        if class_type in frontend:
            uses.append(NodeUse(class_type, count, "frontend", "graph-only node of the ComfyUI frontend"))
        elif class_type in core:
            uses.append(NodeUse(class_type, count, "comfyui", f"ComfyUI (in {data.comfyui.version})",
                                saved_with=saved_with))
        elif versions:
            span = versions[0] if len(versions) == 1 else f"{versions[0]} … {versions[-1]}"
            uses.append(NodeUse(class_type, count, "plugin", f"{catalog.plugin.name} {span}",
                                plugin=catalog.plugin.name, plugin_versions=tuple(versions)))
        elif saved_with or any(n.cnr_id == "comfy-core" for n in instances):
            # Newer than the catalog's ComfyUI node list: trust the workflow's own record of its origin.
            since = f", saved with ComfyUI {saved_with}" if saved_with else ""
            uses.append(NodeUse(class_type, count, "comfyui",
                                f"ComfyUI newer than {data.comfyui.version} (the workflow says comfy-core{since})",
                                saved_with=saved_with))
        else:
            origin = next((n.cnr_id for n in instances if n.cnr_id), None)
            detail = f"custom node package {origin!r}, not in the catalog" if origin else \
                f"not in ComfyUI {data.comfyui.version} (the catalog's node list) nor in a catalog plugin: " \
                "a newer ComfyUI or a custom node package provides it"
            uses.append(NodeUse(class_type, count, "unknown", detail))
    return uses
