"""Turn the manifest's model list into concrete files: fill `{precision}`/`{rank}`, match catalog entries,
and swap nunchaku files for plain FP8/BF16 ones where nunchaku is not used."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from posixpath import basename

from provisioner.catalog import Catalog, ModelEntry
from provisioner.manifest.model import ModelSpec
from provisioner.resolve.companions import SetRequest, companion_models
from provisioner.resolve.result import ModelChoice, Violation

ROLES = {"diffusion_models": "diffusion model", "unet": "diffusion model", "checkpoints": "checkpoint",
         "text_encoders": "text encoder", "clip": "text encoder", "vae": "VAE", "loras": "LoRA"}


@dataclass
class ModelPlan:
    models: list[ModelChoice] = field(default_factory=list)
    entries: list[ModelEntry | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    #: Files the manifest marks `state: absent`: resolved to their paths like the others, then removed.
    absent: list[ModelChoice] = field(default_factory=list)

    @property
    def nodes(self) -> list[str]:
        return list(dict.fromkeys(m.node for m in self.models if m.node))


@dataclass(frozen=True)
class _Variant:
    template: str
    precision: str | None
    rank: int | None
    file: str


def plan_models(
    specs: list[ModelSpec], catalog: Catalog, precision: str | None, nunchaku: bool, vram_gib: float | None = None
) -> ModelPlan:
    """`precision` is the arch's precision when `nunchaku` is used; otherwise files go plain. After the
    listed files come the companions their standard workflows load (text encoders, VAE, LoRA), chosen
    for `vram_gib` of GPU memory."""
    plan = ModelPlan()
    requests: list[SetRequest] = []
    for index, spec in enumerate(specs):
        where = f"models[{index}]"
        entry, variants = _match(spec, catalog)
        before = len(plan.models)
        if spec.state == "absent":
            _resolve_absent(plan, spec, catalog, entry, variants, precision, nunchaku, where)
            continue
        if entry is None:
            _plain_file(plan, spec, catalog, precision, nunchaku, where)
        elif nunchaku:
            _nunchaku_file(plan, spec, catalog, entry, variants, precision, where)
        else:
            _fallback_file(plan, spec, catalog, entry, where)
        if entry is not None and spec.companions and len(plan.models) > before:
            requests.append(SetRequest(entry, spec.file, plan.models[-1].fallback))
    companions, notes = companion_models(requests, plan.models, catalog, nunchaku, vram_gib)
    plan.models += companions
    plan.entries += [None] * len(companions)
    plan.notes += notes
    return plan


def _resolve_absent(plan: ModelPlan, spec: ModelSpec, catalog: Catalog, entry: ModelEntry | None,
                    variants: list[_Variant], precision: str | None, nunchaku: bool, where: str) -> None:
    """Resolve an absent model to the file it names (no companions: they may serve other models)."""
    scratch = ModelPlan()
    if entry is None:
        _plain_file(scratch, spec, catalog, precision, nunchaku, where)
    elif nunchaku:
        _nunchaku_file(scratch, spec, catalog, entry, variants, precision, where)
    else:
        _fallback_file(scratch, spec, catalog, entry, where)
    plan.absent += scratch.models
    plan.violations += scratch.violations


def _match(spec: ModelSpec, catalog: Catalog) -> tuple[ModelEntry | None, list[_Variant]]:
    if spec.repo is None:
        return None, []
    pattern = _pattern(spec.file)
    for entry in catalog.model_entries():
        if not catalog.same_model_repo(entry.repo, spec.repo):
            continue
        variants = [v for v in _variants(entry) if pattern.fullmatch(v.file)]
        if variants:
            return entry, variants
    return None, []


def _pattern(file: str) -> re.Pattern[str]:
    text = re.escape(file)
    text = text.replace(re.escape("{precision}"), "(?:int4|fp4)").replace(re.escape("{rank}"), r"\d+")
    return re.compile(text)


def _variants(entry: ModelEntry) -> list[_Variant]:
    if entry.precision_independent:
        return [_Variant(t, None, None, t) for t in entry.files]
    return [
        _Variant(t, precision, rank, t.format(precision=precision, rank=rank))
        for t in entry.files
        for precision, ranks in entry.ranks.items()
        for rank in ranks
    ]


def _nunchaku_file(
    plan: ModelPlan,
    spec: ModelSpec,
    catalog: Catalog,
    entry: ModelEntry,
    variants: list[_Variant],
    precision: str | None,
    where: str,
) -> None:
    usable = [v for v in variants if v.precision in (None, precision)]
    if not usable:
        other = sorted({v.precision or "" for v in variants})
        suggestion = re.sub(r"svdq-(int4|fp4)_", "svdq-{precision}_", spec.file)
        plan.violations.append(
            Violation(
                field=f"{where}.file",
                reason=f"{spec.file} is a {'/'.join(o.upper() for o in other)} model, but this GPU needs "
                f"{(precision or '?').upper()} models",
                fix=f"Use file: {suggestion} so the resolver fills in the precision",
            )
        )
        return
    if spec.rank is not None:
        ranked = [v for v in usable if v.rank in (None, spec.rank)]
        if not ranked:
            ranks = ", ".join(str(r) for r in sorted({v.rank for v in usable if v.rank}))
            plan.violations.append(
                Violation(
                    field=f"{where}.rank",
                    reason=f"{entry.id} has no {precision} file with rank {spec.rank}",
                    fix=f"Set rank to one of: {ranks}",
                )
            )
            return
        usable = ranked
    # Rank 32 files are the ones the official workflows use and the smallest; larger ranks are opt-in.
    chosen = min(usable, key=lambda v: v.rank or 0)
    why = f"{entry.id}: {chosen.precision.upper() if chosen.precision else 'precision-independent'} file"
    if chosen.rank is not None:
        why += f", rank {chosen.rank}" + ("" if spec.rank or "{rank}" not in spec.file else " (smallest available)")
    why += f", loaded by {entry.node}"
    size = spec.size if spec.size is not None else entry.size(chosen.precision, chosen.rank)
    plan.models.append(
        ModelChoice(
            repo=spec.repo,
            file=chosen.file,
            filename=basename(chosen.file),
            folder=spec.folder if "folder" in spec.model_fields_set else entry.folder,
            url=spec.url or catalog.model_url(spec.repo or entry.repo, chosen.file, spec.revision),
            revision=spec.revision,
            size=size,
            size_approx=spec.size is None and entry.sizes_approx and size is not None,
            sha256=spec.sha256,
            precision=chosen.precision,
            rank=chosen.rank,
            node=entry.node,
            role=ROLES.get(entry.folder),
            why=why,
        )
    )
    plan.entries.append(entry)


def _fallback_file(plan: ModelPlan, spec: ModelSpec, catalog: Catalog, entry: ModelEntry, where: str) -> None:
    fallback = entry.fallback
    if fallback is None:
        plan.violations.append(
            Violation(
                field=where,
                reason=f"{spec.file} needs nunchaku, which is not used on this host, and the catalog knows no "
                f"plain FP8/BF16 replacement for {entry.id}",
                fix=f"Remove {where} or list a plain ComfyUI model file instead",
            )
        )
        return
    why = (
        f"{entry.id}: nunchaku is not used, so the {fallback.dtype.upper()} file loaded by "
        f"{fallback.node} replaces {spec.file}"
    )
    if fallback.note:
        why += f" ({fallback.note})"
    if fallback.uncertain:
        why += "; this replacement file is not verified"
    plan.models.append(
        ModelChoice(
            repo=fallback.repo,
            file=fallback.file,
            filename=basename(fallback.file),
            folder=fallback.folder,
            url=catalog.model_url(fallback.repo, fallback.file),
            revision="main",
            size=fallback.size,
            size_approx=fallback.size_approx,
            precision=fallback.dtype,
            rank=None,
            node=fallback.node,
            fallback=True,
            role=ROLES.get(fallback.folder),
            why=why,
        )
    )
    plan.entries.append(entry)


def _plain_file(
    plan: ModelPlan, spec: ModelSpec, catalog: Catalog, precision: str | None, nunchaku: bool, where: str
) -> None:
    file = spec.file
    if "{precision}" in file:
        if not nunchaku or precision is None:
            plan.violations.append(
                Violation(
                    field=f"{where}.file",
                    reason=f"{file} has a {{precision}} placeholder, but nunchaku is not used on this host",
                    fix=f"Replace {where} with a plain FP8/BF16 model file",
                )
            )
            return
        file = file.replace("{precision}", precision)
    if "{rank}" in file:
        if spec.rank is None:
            plan.violations.append(
                Violation(
                    field=f"{where}.rank",
                    reason=f"{file} has a {{rank}} placeholder but no rank is set, and the catalog does not know it",
                    fix=f"Set {where}.rank (e.g. 32) or write the rank into the file name",
                )
            )
            return
        file = file.replace("{rank}", str(spec.rank))
    if spec.repo is not None and any(catalog.same_model_repo(e.repo, spec.repo) for e in catalog.model_entries()):
        plan.notes.append(f"{where}: {file} is not a file the catalog knows in {spec.repo}; taken as written")
    url = spec.url or (catalog.model_url(spec.repo, file, spec.revision) if spec.repo else None)
    plan.models.append(
        ModelChoice(
            repo=spec.repo,
            file=file,
            filename=basename(file),
            folder=spec.folder,
            url=url,
            revision=spec.revision,
            size=spec.size,
            sha256=spec.sha256,
            precision=precision if "{precision}" in spec.file else None,
            rank=spec.rank if "{rank}" in spec.file else None,
            node=None,
            role=ROLES.get(spec.folder),
            why="taken as written in the manifest",
        )
    )
    plan.entries.append(None)
