"""The rest of a model's standard workflow: the text encoders, VAE and LoRA the catalog's workflow set
names for the chosen diffusion model, picked per slot for this host (nunchaku or plain, GPU memory)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from posixpath import basename

from provisioner.catalog import Catalog, CompanionFile, CompanionOption, ModelEntry
from provisioner.resolve.result import ModelChoice

ROLES = {"text_encoders": "text encoder", "clip": "text encoder", "vae": "VAE", "loras": "LoRA"}


@dataclass(frozen=True)
class SetRequest:
    """One diffusion model whose set is wanted: its catalog entry, the file the manifest asked for, and
    whether the plain replacement was chosen."""

    entry: ModelEntry
    requested: str
    fallback: bool


def companion_models(
    requests: list[SetRequest],
    listed: list[ModelChoice],
    catalog: Catalog,
    nunchaku: bool,
    vram_gib: float | None,
) -> tuple[list[ModelChoice], list[str]]:
    """The companion files to install, after those the manifest lists (shared files appear once), and notes."""
    chosen: list[ModelChoice] = []
    notes: list[str] = []
    taken = {(m.folder, m.filename) for m in listed}
    for request in requests:
        workflow_set = catalog.workflow_set(request.entry)
        if workflow_set is None or (request.fallback and request.entry.fallback
                                    and request.entry.fallback.self_contained):
            continue
        for slot, options in workflow_set.slots.items():
            if any(_fills(catalog, catalog.companion_file(o.file), m) for o in options for m in listed):
                continue  # the manifest chose this slot's file itself
            option = next((o for o in options if _applies(o, request.requested, nunchaku, vram_gib)), None)
            if option is None:
                continue
            file = catalog.companion_file(option.file)
            if (file.folder, basename(file.file)) in taken:
                continue
            taken.add((file.folder, basename(file.file)))
            chosen.append(_choice(catalog, request.entry, slot, options, option, nunchaku, vram_gib))
        if vram_gib is None and any(o.min_vram_gib for opts in workflow_set.slots.values() for o in opts):
            notes.append(f"{request.entry.id}: GPU memory unknown, so the largest text encoder was chosen")
    return chosen, list(dict.fromkeys(notes))


def _fills(catalog: Catalog, file: CompanionFile, model: ModelChoice) -> bool:
    return (model.repo is not None and catalog.same_model_repo(file.repo, model.repo)
            and basename(model.file) == basename(file.file))


def _applies(option: CompanionOption, requested: str, nunchaku: bool, vram_gib: float | None) -> bool:
    if option.mode is not None and option.mode != ("nunchaku" if nunchaku else "plain"):
        return False
    if option.min_vram_gib is not None and vram_gib is not None and vram_gib + 0.5 < option.min_vram_gib:
        return False  # boards sold as "24 GB" report a little less, as in the capacity check
    return option.requested is None or re.search(option.requested, requested) is not None


def _choice(
    catalog: Catalog,
    entry: ModelEntry,
    slot: str,
    options: list[CompanionOption],
    option: CompanionOption,
    nunchaku: bool,
    vram_gib: float | None,
) -> ModelChoice:
    file = catalog.companion_file(option.file)
    role = ROLES[file.folder]
    why = f"{role} ({slot}) of the {entry.id} standard workflow, loaded by {file.node}"
    reasons = []
    if option.min_vram_gib is not None and vram_gib is not None:
        reasons.append(f"GPU has {vram_gib:.0f} GiB (>= {option.min_vram_gib:g})")
    elif vram_gib is not None and any(o.min_vram_gib for o in options):
        reasons.append(f"GPU has {vram_gib:.0f} GiB")
    if option.mode is not None:
        reasons.append("nunchaku is used" if nunchaku else "nunchaku is not used")
    if option.requested is not None:
        reasons.append(f"the manifest asks for a {option.requested} model")
    if reasons:
        why += "; " + ", ".join(reasons)
    if file.unverified:
        why += "; named by no official template, not verified"
    elif file.sha256 is None or file.size_approx:
        why += "; size/sha256 not verified"
    return ModelChoice(
        repo=file.repo,
        file=file.file,
        filename=basename(file.file),
        folder=file.folder,
        url=catalog.model_url(file.repo, file.file),
        revision="main",
        size=file.size,
        size_approx=file.size_approx,
        sha256=file.sha256,
        precision=None,
        rank=None,
        node=file.node,
        role=role,
        companion_of=entry.id,
        why=why,
    )
