"""The analysis of one workflow, optionally against a manifest: nodes and their providers, model files,
Nunchaku replacements, and what the manifest lacks to run it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from posixpath import basename
from typing import Any

from provisioner.catalog import Catalog, parse_version, specifier, version_key
from provisioner.manifest.model import Manifest
from provisioner.workflow.models import ModelFile, model_files
from provisioner.workflow.nodes import NodeUse, load_node_catalog, node_uses
from provisioner.workflow.parse import Workflow
from provisioner.workflow.suggest import Host, Replacement, suggest

#: Folder names ComfyUI treats as one (folder_paths.py maps the legacy names onto the new ones).
FOLDER_ALIASES = {"unet": "diffusion_models", "clip": "text_encoders"}


def same_folder(a: str, b: str) -> bool:
    return FOLDER_ALIASES.get(a, a) == FOLDER_ALIASES.get(b, b)


@dataclass(frozen=True)
class Lack:
    """Something the manifest must add to run the workflow, with the fix."""

    kind: str  # "plugin", "model", "comfyui", "node"; "workflow": the workflow must change, not the manifest
    what: str
    fix: str


@dataclass
class Analysis:
    workflow: str
    format: str
    nodes: list[NodeUse]
    models: list[ModelFile]
    replacements: list[Replacement]
    comfyui_min: str | None = None
    comfyui_min_why: str = ""
    manifest: str | None = None
    lacks: list[Lack] = field(default_factory=list)

    @property
    def plugins(self) -> list[NodeUse]:
        return [n for n in self.nodes if n.provider == "plugin"]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def analyze(workflow: Workflow, catalog: Catalog, host: Host | None = None,
            manifest: Manifest | None = None, manifest_name: str | None = None) -> Analysis:
    uses = node_uses(workflow.nodes, catalog)
    files = model_files(workflow.nodes)
    analysis = Analysis(workflow.path, workflow.format, uses, files, suggest(files, catalog, host or Host()))
    analysis.comfyui_min, analysis.comfyui_min_why = _comfyui_floor(uses, catalog)
    if manifest is not None:
        analysis.manifest = manifest_name
        analysis.lacks = _lacks(analysis, manifest, catalog)
    return analysis


def _comfyui_floor(uses: list[NodeUse], catalog: Catalog) -> tuple[str | None, str]:
    """The lowest ComfyUI version the workflow's nodes are known to need, and why."""
    snapshot = load_node_catalog().comfyui.version
    floor: tuple[str, str] | None = None

    def consider(version: str, why: str) -> None:
        nonlocal floor
        if parse_version(version) and (floor is None or version_key(version) > version_key(floor[0])):
            floor = (version, why)

    for use in uses:
        if use.provider == "comfyui" and use.detail.startswith("ComfyUI newer"):
            # The catalog's list stops at the snapshot: the release that added the node lies between it and
            # the oldest release the workflow records the node in, which is the one known to have it.
            consider(use.saved_with or snapshot, f"{use.class_type} is not in ComfyUI {snapshot}"
                     + (f" and the workflow records it in {use.saved_with} (a release in between may have it)"
                        if use.saved_with else ""))
        if use.provider == "plugin" and use.plugin_versions:
            release = catalog.plugin_release(use.plugin_versions[-1])
            need = release.node_comfyui.get(use.class_type) if release else None
            lower = re.match(r"^>=\s*([0-9][0-9.]*)", need.versions.split(",")[0]) if need else None
            if need and lower:
                consider(lower.group(1), f"{use.class_type} of {use.plugin} {use.plugin_versions[-1]} needs "
                         f"ComfyUI {need.versions}")
    return floor if floor else (None, "")


def _manifest_files(manifest: Manifest) -> list[tuple[re.Pattern[str], str]]:
    """A pattern per manifest model file name: it matches the filled-in names and the template itself."""
    patterns = []
    for spec in manifest.models:
        text = re.escape(basename(spec.file))
        text = text.replace(re.escape("{precision}"), r"(?:int4|fp4|\{precision\})")
        text = text.replace(re.escape("{rank}"), r"(?:\d+|\{rank\})")
        patterns.append((re.compile(text), spec.folder))
    return patterns


def _lacks(analysis: Analysis, manifest: Manifest, catalog: Catalog) -> list[Lack]:
    lacks: list[Lack] = []
    comfyui = manifest.comfyui
    plugins = comfyui.plugins if comfyui else []
    if comfyui is None:
        lacks.append(Lack("comfyui", "the manifest installs no ComfyUI", "add a comfyui: section"))
    nunchaku = next((p for p in plugins if catalog.is_nunchaku_plugin(p.name, p.repo)), None)
    for use in analysis.plugins:
        if nunchaku is None:
            lacks.append(Lack("plugin", f"{use.plugin} (for {use.class_type})",
                              f"add {{name: {catalog.plugin.name}, repo: {catalog.plugin.repo}}} to comfyui.plugins"))
            continue
        pinned = nunchaku.ref.removeprefix("v")
        if parse_version(pinned) and pinned not in use.plugin_versions:
            lacks.append(Lack("plugin", f"{use.class_type} is not registered by {use.plugin} {nunchaku.ref}",
                              f"set its ref to one of: {', '.join('v' + v for v in use.plugin_versions)}"))
    for use in analysis.nodes:
        if use.provider == "unknown":
            lacks.append(Lack("node", f"{use.class_type}: {use.detail}",
                              "pin a ComfyUI that has it, or add the custom node package that provides it "
                              "to comfyui.plugins"))
    wanted = _manifest_files(manifest)

    def listed(name: str, in_folder: str) -> bool:
        return any(p.fullmatch(basename(name)) and same_folder(folder, in_folder) for p, folder in wanted)

    replaced = {r.replaces_file for r in analysis.replacements}
    # The manifest installs the Nunchaku file instead: the workflow must load it (and drop merged LoRAs).
    switched = {r.replaces_file: r for r in analysis.replacements
                if listed(r.file, r.folder) or listed(r.file_template, r.folder)}
    merged = {lora: r for r in switched.values() for lora in r.merged_loras}
    for model in analysis.models:
        if not model.active or listed(model.name, model.folder):
            continue
        if model.name in switched or (model.folder == "loras" and model.name in merged):
            r = switched.get(model.name) or merged[model.name]
            fix = (f"load the manifest's {basename(r.file_template)} with {r.node} (cpu_offload: {r.cpu_offload}) "
                   f"instead of {r.replaces}" if model.name in switched else
                   f"bypass node {model.node}: {basename(r.file_template)} has this LoRA merged in")
            lacks.append(Lack("workflow", f"{model.folder}/{model.name} (node {model.node}, {model.class_type})", fix))
            continue
        fix = f"add it to models: (folder: {model.folder})"
        if model.name in replaced:
            fix += ", or load the Nunchaku replacement suggested above"
        lacks.append(Lack("model", f"{model.folder}/{model.name} (node {model.node}, {model.class_type})", fix))
    ref = comfyui.ref.removeprefix("v") if comfyui else None
    if (analysis.comfyui_min and ref and parse_version(ref)
            and version_key(ref) not in specifier(f">={analysis.comfyui_min}")):
        lacks.append(Lack("comfyui", f"ComfyUI {comfyui.ref if comfyui else ''} is older than "
                          f"{analysis.comfyui_min}: {analysis.comfyui_min_why}",
                          f"set comfyui.ref to v{analysis.comfyui_min} or newer"))
    return lacks
