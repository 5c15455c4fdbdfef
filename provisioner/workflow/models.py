"""Every model file a workflow's loaders name, and its ComfyUI models folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from provisioner.workflow.nodes import load_node_catalog
from provisioner.workflow.parse import WorkflowNode

#: Loader choices that mean "no file".
_NO_FILE = {"", "none", "None", "[None]"}
_HF_URL = re.compile(r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+?)"
                     r"(?:\?.*)?$")


@dataclass(frozen=True)
class ModelFile:
    """A file a node loads: `source` says whether its loader's widget named it or only the node's
    `properties.models` metadata did."""

    name: str
    folder: str
    node: str
    class_type: str
    source: Literal["widget", "metadata"]
    active: bool = True
    url: str | None = None

    @property
    def huggingface(self) -> tuple[str, str, str] | None:
        """(repo, revision, path in the repo) when the URL is a Hugging Face download URL."""
        match = _HF_URL.match(self.url or "")
        return (match["repo"], match["revision"], match["file"]) if match else None


def _widget(node: WorkflowNode, name: str, index: int) -> Any:
    if isinstance(node.widgets, dict):
        return node.widgets.get(name)
    if node.inputs:
        return node.inputs.get(name)
    return node.widgets[index] if index < len(node.widgets) else None


def model_files(nodes: list[WorkflowNode]) -> list[ModelFile]:
    """Widget-named files first (they are what ComfyUI will load); metadata adds files and URLs."""
    loaders = load_node_catalog().loaders
    found: dict[tuple[str, str, str], ModelFile] = {}
    for node in nodes:
        urls = {(m.name, m.directory): m.url for m in node.models}
        loader = loaders.get(node.class_type)
        for slot in loader.files if loader else []:
            value = _widget(node, slot.input, slot.index)
            # An API input wired to another node is a [node_id, output] pair: the file is not written here.
            if not isinstance(value, str) or value in _NO_FILE:
                continue
            found[(node.path, value, slot.folder)] = ModelFile(
                value, slot.folder, node.path, node.class_type, "widget", node.active,
                urls.get((value, slot.folder)) or _url_by_name(node, value))
        # Where the loader's widget names a file, metadata for another file in the same folder is stale
        # (the template was edited): ComfyUI loads what the widget says.
        named = {folder for path, _, folder in found if path == node.path}
        for meta in node.models:
            key = (node.path, meta.name, meta.directory)
            if key not in found and meta.directory not in named:
                found[key] = ModelFile(meta.name, meta.directory, node.path, node.class_type, "metadata",
                                       node.active, meta.url)
    return list(found.values())


def _url_by_name(node: WorkflowNode, name: str) -> str | None:
    return next((m.url for m in node.models if m.name == name), None)
