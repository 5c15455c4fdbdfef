"""A starter manifest for a host, from its facts: the built-in base, the GPU's arch, and the first catalog
model whose whole workflow set fits the GPU's memory and the disk.

"Fits" is the resolver's own verdict: each candidate is written out, loaded and resolved exactly as
`provision resolve` would, so the manifest handed back resolves for that host by construction.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.catalog import Catalog, ModelEntry
from provisioner.errors import ProvisionError
from provisioner.facts import Facts
from provisioner.manifest import load_manifest
from provisioner.manifest.loader import BUILTIN_PREFIX
from provisioner.manifest.model import Target
from provisioner.resolve import Resolution, resolve

BASE = f"{BUILTIN_PREFIX}comfyui-nunchaku"
GIB = 1024**3


class StarterError(ProvisionError):
    """No starter manifest can be written for this host (or not the one asked for)."""


@dataclass
class Starter:
    """The manifest as data, what it was chosen from, and what the user should know."""

    data: dict[str, Any]
    summary: str
    notes: list[str] = field(default_factory=list)
    resolution: Resolution | None = None

    def text(self) -> str:
        header = "".join(f"# {line}\n" for line in [self.summary, *self.notes])
        return header + yaml.safe_dump(self.data, sort_keys=False)


def host_name(facts: Facts, target: Target) -> str:
    """A manifest name from the host name (or the connection), in the characters a name may use."""
    raw = facts.hostname or target.connection.split("://")[-1].split("@")[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")
    return name or "host"


def _target_section(target: Target) -> dict[str, Any]:
    section: dict[str, Any] = {"connection": target.connection, "root": target.root}
    for key in ("user", "port", "identity_file"):
        value = getattr(target, key)
        if value is not None:
            section[key] = value
    return section


def _model(entry: ModelEntry) -> dict[str, Any]:
    model = {"repo": entry.repo, "file": entry.files[0]}
    if entry.folder != "diffusion_models":
        model["folder"] = entry.folder
    return model


def _resolve_data(data: dict[str, Any], catalog: Catalog, facts: Facts) -> Resolution:
    """Resolve `data` as `provision resolve` resolves a file (the built-in base merged in)."""
    with tempfile.TemporaryDirectory(prefix="provision-init-") as scratch:
        path = Path(scratch) / "candidate.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return resolve(load_manifest(path).manifest, facts, catalog)


def starter_manifest(facts: Facts, target: Target, catalog: Catalog, model_id: str | None = None) -> Starter:
    """The starter for this host; a host without a GPU gets a CPU manifest (gpu.allow_cpu) and is told so."""
    base: dict[str, Any] = {"extends": BASE, "name": host_name(facts, target), "target": _target_section(target)}
    gpus = facts.nvidia.gpus
    if not gpus:
        data = {**base, "gpu": {"arch": "auto", "allow_cpu": True}}
        resolution = _resolve_data(data, catalog, facts)
        if not resolution.ok:
            raise StarterError(_refusal("the CPU manifest", resolution))
        return Starter(data, f"provision init: {target.connection} has no NVIDIA GPU (nvidia-smi lists none).",
                       ["CPU mode (gpu.allow_cpu: true): torch's CPU build, ComfyUI with --cpu, no nunchaku and no",
                        "models; on a GPU host, set gpu.arch (or remove gpu.allow_cpu) and add models."], resolution)
    gpu = gpus[0]
    index = gpu.index if gpu.index is not None else 0
    if gpu.sm is None:
        raise StarterError(f"{target.connection}: cannot tell the compute capability of GPU {index} ({gpu.name}); "
                           "write the manifest by hand with gpu.arch set (e.g. sm_86)")
    gpu_section: dict[str, Any] = {"arch": gpu.sm, "index": index}
    # The models a workflow starts from (those with a workflow set), not the encoders and VAEs they load.
    candidates = [e for e in catalog.model_entries() if e.workflow_set]
    entries = candidates
    if model_id is not None:
        entries = [e for e in candidates if e.id == model_id]
        if not entries:
            known = ", ".join(e.id for e in candidates)
            raise StarterError(f"--model {model_id}: not in the catalog; one of: {known}")
    refusals: list[str] = []
    for entry in entries:
        data = {**base, "gpu": gpu_section, "models": [_model(entry)]}
        resolution = _resolve_data(data, catalog, facts)
        if resolution.ok:
            vram = f"{gpu.memory_total_mib / 1024:.0f} GiB" if gpu.memory_total_mib else "unknown memory"
            disk = f"{facts.disk_free_bytes / GIB:.0f} GiB free" if facts.disk_free_bytes else "disk unknown"
            files = len(resolution.models)
            return Starter(data, f"provision init: {target.connection}: GPU {index} {gpu.name} ({gpu.sm}, {vram}), "
                           f"{disk} at {facts.root or target.root}.",
                           [f"Models: {entry.id} and its workflow set ({files} files), the first catalog model that "
                            "fits this GPU and disk;", "`provision resolve` shows the choice in full."], resolution)
        refusals.append(f"{entry.id}: {resolution.violations[0].reason}")
    data = {**base, "gpu": gpu_section}
    resolution = _resolve_data(data, catalog, facts)
    if not resolution.ok:
        raise StarterError(_refusal(f"a manifest for {gpu.name} ({gpu.sm})", resolution))
    return Starter(data, f"provision init: {target.connection}: GPU {index} {gpu.name} ({gpu.sm}).",
                   ["No catalog model fits this host, so none is listed:", *(f"  {r}" for r in refusals[:6])],
                   resolution)


def _refusal(what: str, resolution: Resolution) -> str:
    reasons = "; ".join(f"{v.field}: {v.reason} (fix: {v.fix})" for v in resolution.violations)
    return f"{what} does not resolve for this host: {reasons}"
