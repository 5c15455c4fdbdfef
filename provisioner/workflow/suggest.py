"""The Nunchaku replacement for a plain FLUX / Qwen-Image loader: which loader, which svdq file fits the
host, whether it needs cpu_offload, and how much memory to expect."""

from __future__ import annotations

import re
from dataclasses import dataclass
from posixpath import basename

from provisioner.catalog import Catalog, ModelEntry
from provisioner.workflow.models import ModelFile
from provisioner.workflow.nodes import load_node_catalog, plugin_versions

#: The plain loaders a Nunchaku DiT loader replaces.
REPLACEABLE = ("UNETLoader", "CheckpointLoaderSimple")
GIB = 1024**3


@dataclass(frozen=True)
class Host:
    """What the suggestion depends on; unknown fields give the generic answer."""

    arch: str | None = None
    vram_mib: int | None = None
    gpu_name: str | None = None


@dataclass(frozen=True)
class Replacement:
    node: str
    replaces: str
    replaces_file: str
    model: str
    repo: str
    file: str
    file_template: str
    precision: str | None
    rank: int | None
    folder: str
    size_bytes: int | None
    size_approx: bool
    cpu_offload: str
    why_offload: str
    min_vram_gib: float | None
    plugin: str
    plugin_versions: tuple[str, ...]
    expected_memory: str
    note: str = ""
    #: LoRA files the svdq file already has merged in (Lightning), so the workflow drops their loaders.
    merged_loras: tuple[str, ...] = ()


_LIGHTNING = re.compile(r"lightning.*?(\d+)[-_]?steps", re.IGNORECASE)


def _entry_for(name: str, catalog: Catalog) -> ModelEntry | None:
    entries = {e.id: e for e in catalog.model_entries()}
    for rule in load_node_catalog().replacements:
        if any(re.search(pattern, basename(name)) for pattern in rule.files):
            return entries.get(rule.model)
    return None


def suggest(files: list[ModelFile], catalog: Catalog, host: Host) -> list[Replacement]:
    out = []
    for model in files:
        if model.class_type not in REPLACEABLE or model.source != "widget":
            continue
        entry = _entry_for(model.name, catalog)
        if entry is not None:
            loras = [f.name for f in files if f.folder == "loras" and f.active and _LIGHTNING.search(f.name)]
            out.append(_replacement(model, entry, catalog, host, loras))
    return out


def _template(entry: ModelEntry, loras: list[str]) -> tuple[str, tuple[str, ...]]:
    """The svdq file name: the Lightning-merged one with the same step count when the workflow loads a
    Lightning LoRA and the catalog has such a file, else the base model (the first file)."""
    for lora in loras:
        steps = _LIGHTNING.search(lora)
        for template in entry.files:
            merged = _LIGHTNING.search(template)
            if steps and merged and merged.group(1) == steps.group(1):
                return template, (lora,)
    return entry.files[0], ()


def _replacement(model: ModelFile, entry: ModelEntry, catalog: Catalog, host: Host,
                 loras: list[str]) -> Replacement:
    arch = catalog.arch(host.arch) if host.arch else None
    precision = arch.precision if arch is not None else None
    note = ""
    if arch is not None and precision is None:
        note = f"nunchaku has no kernels for {arch.arch} ({arch.reason or 'unsupported'}); keep the plain file"
    # Rank 32 is the smallest, as the resolver picks by default.
    template, merged = _template(entry, loras)
    ranks = entry.ranks.get(precision, []) if precision in ("int4", "fp4") else []
    rank = min(ranks) if ranks else (min(entry.ranks.get("int4", [32])) if entry.ranks else None)
    file = template.format(precision=precision or "{precision}", rank=rank if rank is not None else "{rank}")
    size = entry.size(precision, rank) if precision else None
    offload, why = _cpu_offload(entry.node, catalog, host)
    versions = tuple(plugin_versions(catalog, entry.node))
    if size is not None:
        expected = f"{size / 1e9:.1f} GB of weights" + (" (approximate)" if entry.sizes_approx else "")
        expected += ", mostly kept in system RAM with cpu_offload enabled" if offload == "enable" else \
            " on the GPU"
    else:
        expected = "the catalog has no size for this file"
    if entry.min_vram_gib is not None:
        expected += f"; runs from {entry.min_vram_gib:g} GiB of VRAM"
    return Replacement(
        node=entry.node, replaces=model.class_type, replaces_file=model.name, model=entry.id, repo=entry.repo,
        file=file, file_template=template, precision=precision, rank=rank, folder=entry.folder, size_bytes=size,
        size_approx=entry.sizes_approx, cpu_offload=offload, why_offload=why, min_vram_gib=entry.min_vram_gib,
        plugin=catalog.plugin.name, plugin_versions=versions, expected_memory=expected, note=note, merged_loras=merged)


def _cpu_offload(node: str, catalog: Catalog, host: Host) -> tuple[str, str]:
    setting = catalog.plugin_setting("cpu_offload")
    threshold = setting.offload_below_mib.get(node) if setting else None
    if threshold is None:
        return "n/a", f"{node} has no cpu_offload input"
    if host.vram_mib is None:
        return "auto", f"the host's VRAM is unknown: the loader enables offload below {threshold} MiB"
    if host.vram_mib < threshold:
        return "enable", f"{host.vram_mib} MiB of VRAM is below the loader's {threshold} MiB threshold"
    return "disable", f"{host.vram_mib} MiB of VRAM is at least the loader's {threshold} MiB threshold"
