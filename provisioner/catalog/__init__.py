"""What we know about the ecosystem, as data: nunchaku releases and wheels, GPU archs, torch builds and
driver floors, ComfyUI-nunchaku releases, ComfyUI releases and model files.

The YAML files next to this module are the single source; a new release is a YAML change only.
`load_catalog()` reads them once (through importlib.resources, so it works from a wheel) and caches them.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any, TypeVar

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ValidationError

from provisioner.catalog.schema import (
    ArchInfo,
    Build,
    ComfyUICatalog,
    ComfyUIRelease,
    CompanionFile,
    CompanionOption,
    GpuCatalog,
    GpuModel,
    ModelCatalog,
    ModelEntry,
    NunchakuCatalog,
    NunchakuRelease,
    OrgPeriod,
    PluginCatalog,
    PluginRelease,
    PluginSetting,
    RepoAlias,
    Submodule,
    TorchCatalog,
    TorchRelease,
    UnsupportedArch,
    WorkflowSet,
)
from provisioner.errors import ProvisionError

__all__ = [
    "ArchInfo",
    "Build",
    "Catalog",
    "CatalogError",
    "ComfyUIRelease",
    "CompanionFile",
    "CompanionOption",
    "GpuModel",
    "ModelEntry",
    "NunchakuRelease",
    "PluginRelease",
    "PluginSetting",
    "Submodule",
    "TorchRelease",
    "UnsupportedArch",
    "WorkflowSet",
    "arch_number",
    "load_catalog",
    "parse_version",
    "specifier",
    "version_key",
]

M = TypeVar("M", bound=BaseModel)


class CatalogError(ProvisionError):
    """A catalog file is missing or does not match its schema (a packaging bug, not a user error)."""


@lru_cache(maxsize=4096)
def parse_version(text: str) -> Version | None:
    """A PEP 440 version, accepting a leading 'v' (git tags); None when it is not a version.

    Cached: resolving one manifest sorts and compares the catalog's few hundred versions millions of times."""
    try:
        return Version(text[1:] if text[:1] in ("v", "V") else text)
    except InvalidVersion:
        return None


def version_key(text: str) -> Version:
    """Sort key for versions known to be valid (catalog data)."""
    version = parse_version(text)
    if version is None:
        raise CatalogError(f"catalog holds an invalid version {text!r}")
    return version


def arch_number(arch: str) -> int | None:
    """sm_86 -> 86, sm_120a -> 120 (the 'a' suffix names arch-specific features of the same SM)."""
    match = re.fullmatch(r"sm_(\d{2,3})a?", arch)
    return int(match.group(1)) if match else None


def _normalise_arch(arch: str) -> str:
    number = arch_number(arch)
    return f"sm_{number}" if number is not None else arch


@dataclass(frozen=True)
class Catalog:
    """Typed, read-only access to every catalog file."""

    nunchaku: NunchakuCatalog
    gpus: GpuCatalog
    torch: TorchCatalog
    plugin: PluginCatalog
    comfyui: ComfyUICatalog
    models: ModelCatalog

    # --- nunchaku -------------------------------------------------------------------------

    def nunchaku_releases(self) -> list[NunchakuRelease]:
        """Newest first."""
        return sorted(self.nunchaku.releases, key=lambda r: version_key(r.version), reverse=True)

    def nunchaku_release(self, version: str) -> NunchakuRelease | None:
        wanted = parse_version(version)
        return next((r for r in self.nunchaku.releases if version_key(r.version) == wanted), None)

    def build_archs(self, release: NunchakuRelease, build: Build) -> list[str]:
        return [_normalise_arch(a) for a in release.archs.get(build.cuda, [])]

    def wheel_filename(self, release: NunchakuRelease, build: Build, python: str, platform: str) -> str:
        version = version_key(release.version)
        for era in self.nunchaku.wheel_filenames:
            if version in SpecifierSet(era.versions, prereleases=True):
                return era.template.format(
                    version=release.version, torch=build.torch, cuda=build.cuda, python=python, platform=platform
                )
        raise CatalogError(f"no wheel filename template covers nunchaku {release.version}")

    def wheel_urls(self, release: NunchakuRelease, filename: str) -> list[str]:
        """GitHub first (the current org, then the one that published the release), then mirrors."""
        urls: list[str] = []
        if "github" in release.hosts:
            hosting = self.nunchaku.github
            tag = hosting.tag.format(version=release.version)
            current = _current_org(hosting.orgs)
            publisher = _org_at(hosting.orgs, release.date)
            for org in dict.fromkeys(o for o in (current, publisher) if o):
                urls.append(hosting.release_url.format(org=org, tag=tag, filename=filename))
        for host in ("huggingface", "modelscope"):
            mirror = self.nunchaku.mirrors.get(host)
            mirror_org = _org_at(mirror.orgs, release.date) if mirror is not None else None
            if host in release.hosts and mirror is not None and mirror_org:
                urls.append(mirror.url.format(org=mirror_org, filename=filename))
        return urls

    def source_submodules(self, release: NunchakuRelease) -> list[Submodule]:
        """The five third_party/ submodules the release's tag pins (empty for a release without git data)."""
        if release.git is None:
            return []
        return list(self.nunchaku.source_build.submodule_sets[release.git.submodules])

    def official_arches(self, version: str) -> list[str]:
        """setup.py's supported SM list for a nunchaku version ('86', '120a'); the newest list past the catalog."""
        lists = self.nunchaku.source_build.official_arches
        wanted = parse_version(version)
        for entry in lists:
            if wanted is not None and wanted in specifier(entry.versions):
                return list(entry.arches)
        return list(lists[-1].arches)

    def arch_min_nvcc(self, arch: str) -> str | None:
        """The nvcc release setup.py needs before it builds `arch` ('121a' -> '13.0'); None: any."""
        return self.nunchaku.source_build.arch_min_nvcc.get(arch)

    def unsupported_arch(self, arch: str) -> UnsupportedArch | None:
        return next((a for a in self.nunchaku.source_build.unsupported_arches if a.arch == arch), None)

    def emulated_int4(self) -> dict[str, str]:
        """'sm_90' -> how it emulates the INT4 MMA, for every arch whose override build runs emulated."""
        return {f"sm_{a.arch}": a.emulation for a in self.nunchaku.source_build.unsupported_arches if a.emulation}

    def source_wheel_filename(self, version: str, torch_cuda: str, torch_minor: str, python: str,
                              platform: str) -> str:
        """The name setup.py gives a wheel built here: the release's naming era, with the venv's torch."""
        build = Build(torch=torch_minor, cuda=torch_cuda)
        probe = NunchakuRelease(version=version, date=datetime.date.min, python=[python], platforms=[platform],
                                hosts=[], builds=[build], archs={}, source="")
        return self.wheel_filename(probe, build, python, platform)

    # --- GPUs -----------------------------------------------------------------------------

    def arch(self, arch: str) -> ArchInfo | None:
        wanted = _normalise_arch(arch)
        return next((a for a in self.gpus.archs if a.arch == wanted), None)

    def gpu_model(self, name: str) -> GpuModel | None:
        """The catalog GPU whose alias appears as whole words in `name` (longest alias wins)."""
        best: tuple[int, GpuModel] | None = None
        for gpu in self.gpus.gpus:
            for alias in gpu.aliases:
                pattern = rf"(?<![A-Za-z0-9]){re.escape(alias)}(?![A-Za-z0-9])"
                if re.search(pattern, name, flags=re.IGNORECASE) and (best is None or len(alias) > best[0]):
                    best = (len(alias), gpu)
        return best[1] if best else None

    def tflops_floor(self, arch: str, gpu_name: str | None) -> float | None:
        """The matmul floor for a check: the named GPU's own, else its arch's conservative one."""
        gpu = self.gpu_model(gpu_name) if gpu_name else None
        if gpu is not None and _normalise_arch(gpu.arch) == _normalise_arch(arch):
            return round(gpu.tflops * self.gpus.floor_fraction, 1)
        info = self.arch(arch)
        return info.tflops_floor if info else None

    # --- torch ----------------------------------------------------------------------------

    def torch_releases(self) -> list[TorchRelease]:
        """Newest first."""
        return sorted(self.torch.releases, key=lambda r: version_key(r.torch), reverse=True)

    def torch_release(self, minor: str) -> TorchRelease | None:
        return next((r for r in self.torch.releases if r.minor == minor), None)

    def torch_index_url(self, cuda: str | None) -> str:
        """cuda '12.8' -> .../whl/cu128; None -> the CPU index."""
        tag = "cpu" if cuda is None else "cu" + cuda.replace(".", "")
        return self.torch.index_url.format(tag=tag)

    def driver_floor(self, cuda: str) -> str | None:
        """Minimum Linux driver for a CUDA runtime version (None when the catalog does not know it)."""
        return next((f.linux for f in self.torch.driver_floors if f.cuda == cuda), None)

    # --- plugin / ComfyUI -----------------------------------------------------------------

    def plugin_releases(self) -> list[PluginRelease]:
        """Newest first."""
        return sorted(self.plugin.releases, key=lambda r: version_key(r.version), reverse=True)

    def plugin_release(self, version: str) -> PluginRelease | None:
        wanted = parse_version(version)
        return next((r for r in self.plugin.releases if version_key(r.version) == wanted), None)

    def plugin_nodes(self, release: PluginRelease) -> list[str]:
        """Every node class the release registers (cumulative over earlier releases)."""
        nodes: dict[str, None] = {}
        for older in sorted(self.plugin.releases, key=lambda r: version_key(r.version)):
            if version_key(older.version) > version_key(release.version):
                break
            for node in older.nodes_removed:
                nodes.pop(node, None)
            nodes.update(dict.fromkeys(older.nodes_added))
        return list(nodes)

    def plugin_tag(self, release: PluginRelease) -> str:
        return self.plugin.tag.format(version=release.version)

    def plugin_setting(self, name: str) -> PluginSetting | None:
        return next((s for s in self.plugin.settings if s.name == name), None)

    def current_plugin_repo(self, repo: str) -> str | None:
        """The plugin's newest confirmed URL when `repo` is one of its older names, else None."""
        return _renamed(repo, self.plugin.repo, self.plugin.repo_aliases)

    def comfyui_confirmed(self, version: str | None) -> bool:
        """False for a release known only from issues (so `auto` prefers another), or no version."""
        wanted = parse_version(version) if version else None
        found = next((r for r in self.comfyui.releases if wanted and version_key(r.version) == wanted), None)
        return found is not None and not found.uncertain

    def is_nunchaku_plugin(self, name: str, repo: str) -> bool:
        names = {n.lower() for n in self.plugin.repo_names}
        last = repo.rstrip("/").removesuffix(".git").rsplit("/", 1)[-1].lower()
        return name.lower() in names or last in names

    def comfyui_releases(self) -> list[ComfyUIRelease]:
        """Newest first."""
        return sorted(self.comfyui.releases, key=lambda r: version_key(r.version), reverse=True)

    def comfyui_tag(self, version: str) -> str:
        return self.comfyui.tag.format(version=version)

    # --- models ---------------------------------------------------------------------------

    def model_entries(self) -> list[ModelEntry]:
        return list(self.models.models)

    def workflow_set(self, entry: ModelEntry) -> WorkflowSet | None:
        return self.models.workflow_sets.get(entry.workflow_set) if entry.workflow_set else None

    def companion_file(self, key: str) -> CompanionFile:
        return self.models.companion_files[key]

    def model_url(self, repo: str, file: str, revision: str = "main") -> str:
        return self.models.download_url.format(repo=repo, revision=revision, file=file)

    def same_model_repo(self, catalog_repo: str, repo: str) -> bool:
        """True when `repo` is `catalog_repo` under any of the orgs that serve the same models."""
        org, _, name = repo.partition("/")
        catalog_org, _, catalog_name = catalog_repo.partition("/")
        orgs = {o.lower() for o in self.models.repo_orgs} | {catalog_org.lower()}
        return name.lower() == catalog_name.lower() and org.lower() in orgs


def _repo_key(url: str) -> str:
    return url.strip().rstrip("/").removesuffix(".git").lower()


def _renamed(repo: str, current: str, aliases: list[RepoAlias]) -> str | None:
    key = _repo_key(repo)
    return current if any(_repo_key(a.repo) == key for a in aliases) and key != _repo_key(current) else None


def _org_at(periods: list[OrgPeriod], day: datetime.date) -> str | None:
    return next((p.org for p in periods if not p.uncertain and p.covers(day)), None)


def _current_org(periods: list[OrgPeriod]) -> str | None:
    open_ended = [p for p in periods if not p.uncertain and p.until is None]
    return open_ended[-1].org if open_ended else None


def specifier(text: str) -> SpecifierSet:
    """A PEP 440 specifier from catalog data; a bad one is a catalog bug."""
    try:
        return SpecifierSet(text, prereleases=True)
    except InvalidSpecifier as exc:
        raise CatalogError(f"catalog holds an invalid version range {text!r}") from exc


def _read(name: str, model: type[M]) -> M:
    try:
        text = resources.files("provisioner.catalog").joinpath(name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise CatalogError(f"catalog file {name} is missing from the installed package: {exc}") from exc
    data: Any = yaml.safe_load(text)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"catalog file {name} is invalid:\n{exc}") from exc


@cache
def load_catalog() -> Catalog:
    """The packaged catalog, read and validated once per process."""
    catalog = Catalog(
        nunchaku=_read("nunchaku.yaml", NunchakuCatalog),
        gpus=_read("gpus.yaml", GpuCatalog),
        torch=_read("torch.yaml", TorchCatalog),
        plugin=_read("plugins.yaml", PluginCatalog),
        comfyui=_read("comfyui.yaml", ComfyUICatalog),
        models=_read("models.yaml", ModelCatalog),
    )
    _check_consistency(catalog)
    return catalog


def _check_consistency(catalog: Catalog) -> None:
    """Cross-file rules the schemas cannot express, so a data change cannot silently break resolution."""
    problems: list[str] = []
    for release in catalog.nunchaku.releases:
        for build in release.builds:
            if build.cuda not in release.archs:
                problems.append(
                    f"nunchaku {release.version}: build torch {build.torch} has no archs for CUDA {build.cuda}"
                )
            if catalog.driver_floor(build.cuda) is None:
                problems.append(f"nunchaku {release.version}: no driver floor for CUDA {build.cuda}")
        if release.git is not None and release.git.submodules not in catalog.nunchaku.source_build.submodule_sets:
            problems.append(f"nunchaku {release.version}: unknown submodule set {release.git.submodules!r}")
    for plugin in catalog.plugin.releases:
        specifier(plugin.backend)
        for rule in plugin.node_comfyui.values():
            specifier(rule.versions)
    for entry in catalog.models.models:
        if entry.comfyui:
            specifier(entry.comfyui)
        if entry.workflow_set and entry.workflow_set not in catalog.models.workflow_sets:
            problems.append(f"model {entry.id}: unknown workflow_set {entry.workflow_set!r}")
    for name, workflow_set in catalog.models.workflow_sets.items():
        for slot, options in workflow_set.slots.items():
            problems += [f"workflow set {name}.{slot}: unknown companion file {option.file!r}"
                         for option in options if option.file not in catalog.models.companion_files]
    for torch in catalog.torch.releases:
        for cuda in torch.cuda:
            if catalog.driver_floor(cuda) is None:
                problems.append(f"torch {torch.torch}: no driver floor for CUDA {cuda}")
    if problems:
        raise CatalogError("catalog is inconsistent:\n  " + "\n  ".join(problems))
