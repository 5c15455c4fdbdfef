"""A ComfyUI workflow file, UI format (what the editor saves, subgraphs included) or API format (what
/prompt takes), read into one flat list of nodes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from provisioner.errors import ProvisionError
from provisioner.input_file import read_input_text

#: UI node modes that keep a node out of the queued prompt (2: muted, 4: bypassed).
INACTIVE_MODES = (2, 4)
#: Far above any real workflow (the largest official template has a few hundred): subgraphs nested inside
#: each other multiply, so a crafted file could otherwise expand without end.
MAX_NODES = 20_000
#: Workflows may carry embedded previews and notes; the official ones stay under 1 MiB.
MAX_WORKFLOW_BYTES = 32 * 1024 * 1024


class WorkflowError(ProvisionError):
    """A file that is not a ComfyUI workflow, with the file and what is wrong."""


@dataclass(frozen=True)
class ModelMetadata:
    """One entry of a UI node's `properties.models`: the file the template says the node loads."""

    name: str
    directory: str
    url: str | None = None


@dataclass
class WorkflowNode:
    """One node; `path` is its id, prefixed by the ids of the subgraph instances that hold it."""

    path: str
    class_type: str
    widgets: list[Any] | dict[str, Any] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    active: bool = True
    cnr_id: str | None = None
    version: str | None = None
    models: list[ModelMetadata] = field(default_factory=list)


@dataclass
class Workflow:
    path: str
    format: Literal["ui", "api"]
    nodes: list[WorkflowNode]


def load_workflow(path: Path | str) -> Workflow:
    text = read_input_text(path, MAX_WORKFLOW_BYTES)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise WorkflowError(f"{path}: the JSON nests too deeply to be a ComfyUI workflow") from None
    return parse_workflow(data, str(path))


def parse_workflow(data: Any, where: str) -> Workflow:
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        return Workflow(where, "ui", _ui_nodes(data, where))
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict):
        data = data["prompt"]  # the body of a /prompt request
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return Workflow(where, "api", _api_nodes(data, where))
    raise WorkflowError(
        f"{where}: not a ComfyUI workflow: expected the UI format (an object with a 'nodes' list, as the editor "
        "saves it) or the API format (an object of node ids, each with 'class_type' and 'inputs', as "
        "'Export (API)' saves it)"
    )


def _api_nodes(data: dict[str, Any], where: str) -> list[WorkflowNode]:
    nodes = []
    for node_id, node in data.items():
        class_type, inputs = node.get("class_type"), node.get("inputs", {})
        if not isinstance(class_type, str) or not class_type:
            raise WorkflowError(f"{where}: node {node_id}: 'class_type' must be a node class name")
        if not isinstance(inputs, dict):
            raise WorkflowError(f"{where}: node {node_id} ({class_type}): 'inputs' must be an object")
        nodes.append(WorkflowNode(str(node_id), class_type, inputs=inputs))
    return nodes


def _ui_nodes(data: dict[str, Any], where: str) -> list[WorkflowNode]:
    definitions = _mapping(data.get("definitions"))
    subgraphs: dict[str, dict[str, Any]] = {}
    graphs = definitions.get("subgraphs")
    for graph in graphs if isinstance(graphs, list) else []:
        if isinstance(graph, dict) and isinstance(graph.get("id"), str):
            subgraphs[graph["id"]] = graph
    # Legacy group nodes: "workflow>NAME" (older frontends: "workflow/NAME") stands for extra.groupNodes[NAME].
    for name, group in _mapping(_mapping(data.get("extra")).get("groupNodes")).items():
        if isinstance(group, dict):
            subgraphs[f"workflow>{name}"] = subgraphs[f"workflow/{name}"] = group
    nodes: list[WorkflowNode] = []
    _collect(data["nodes"], "", True, subgraphs, nodes, where, ())
    return nodes


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _collect(raw_nodes: list[Any], prefix: str, active: bool, subgraphs: dict[str, dict[str, Any]],
             out: list[WorkflowNode], where: str, stack: tuple[str, ...]) -> None:
    if not isinstance(raw_nodes, list):
        raise WorkflowError(f"{where}: subgraph {stack[-1]}: 'nodes' must be a list")
    for index, raw in enumerate(raw_nodes):
        if len(out) >= MAX_NODES:
            raise WorkflowError(f"{where}: more than {MAX_NODES} nodes once subgraphs are expanded; "
                                "is this a real workflow?")
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise WorkflowError(f"{where}: nodes[{index}]{' in subgraph ' + stack[-1] if stack else ''}: "
                                "a node needs a 'type' (its node class)")
        node_id = f"{prefix}{raw.get('id', index)}"
        node_active = active and raw.get("mode", 0) not in INACTIVE_MODES
        class_type = raw["type"]
        if class_type in subgraphs:
            if class_type in stack:
                raise WorkflowError(f"{where}: subgraph {class_type} contains itself")
            inner = subgraphs[class_type].get("nodes", [])
            _collect(inner, f"{node_id}:", node_active, subgraphs, out, where, (*stack, class_type))
            continue
        properties = _mapping(raw.get("properties"))
        widgets = raw.get("widgets_values_named") or raw.get("widgets_values") or []
        out.append(WorkflowNode(
            node_id, class_type,
            widgets=widgets if isinstance(widgets, (list, dict)) else [],
            active=node_active,
            cnr_id=_text(properties.get("cnr_id")),
            version=_text(properties.get("ver")),
            models=_metadata(properties.get("models")),
        ))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _metadata(value: Any) -> list[ModelMetadata]:
    if not isinstance(value, list):
        return []
    return [
        ModelMetadata(m["name"], m["directory"], _text(m.get("url")))
        for m in value
        if isinstance(m, dict) and _text(m.get("name")) and _text(m.get("directory"))
    ]
