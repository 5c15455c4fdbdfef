"""Typed shapes of the catalog YAML files (validated on load, so a bad data change fails loudly)."""

from __future__ import annotations

import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["int4", "fp4"]


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- nunchaku.yaml ---------------------------------------------------------------------------


class OrgPeriod(Entry):
    """An organization that hosted a repository during [since, until)."""

    org: str
    since: datetime.date | None = None
    until: datetime.date | None = None
    uncertain: bool = False
    source: str = ""

    def covers(self, day: datetime.date) -> bool:
        return (self.since is None or day >= self.since) and (self.until is None or day < self.until)


class GithubHosting(Entry):
    release_url: str
    tag: str
    orgs: list[OrgPeriod]
    unconfirmed_orgs: list[OrgPeriod] = Field(default_factory=list)


class Mirror(Entry):
    url: str
    orgs: list[OrgPeriod]


class WheelFilenameEra(Entry):
    versions: str = Field(description="PEP 440 specifier of the nunchaku versions using this template.")
    template: str
    source: str = ""


class Impostor(Entry):
    summary: str
    versions: list[str]
    source: str


class PythonExclusion(Entry):
    python: str
    torch: str


class Build(Entry):
    """One wheel build of a release: the torch major.minor it is tagged for and its CUDA."""

    torch: str
    cuda: str
    nightly: bool = False
    platforms: list[str] | None = None
    uncertain: bool = False
    note: str = ""


class ReleaseGit(Entry):
    """The commit a release's tag points at and the submodule set its tree pins."""

    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    submodules: str = Field(description="Key into source_build.submodule_sets.")


class NunchakuRelease(Entry):
    version: str
    date: datetime.date
    python: list[str]
    python_exclusions: list[PythonExclusion] = Field(default_factory=list)
    platforms: list[str]
    hosts: list[Literal["github", "huggingface", "modelscope"]]
    builds: list[Build]
    builds_uncertain: bool = False
    archs: dict[str, list[str]] = Field(description="SASS targets per build CUDA version.")
    note: str = ""
    source: str
    git: ReleaseGit | None = None

    def build_platforms(self, build: Build) -> list[str]:
        return build.platforms if build.platforms is not None else self.platforms

    def python_excluded(self, python: str, build: Build) -> bool:
        return any(ex.python == python and ex.torch == build.torch for ex in self.python_exclusions)


class KernelErrorModel(Entry):
    """How far the W4A4 result may stray from the FP32 reference (the derivation is in the YAML)."""

    bf16_rounding: float = Field(gt=0, description="Relative RMS error of one rounding to bf16.")
    safety: float = Field(gt=1)
    bf16_accumulation: list[Precision] = Field(description="Precisions whose kernel accumulates groups in bf16.")
    source: str = ""


class KernelCheckData(Entry):
    """What kernels.w4a4_gemm holds each architecture to."""

    error: KernelErrorModel
    native_min_speedup: dict[str, float]


class Submodule(Entry):
    """A git submodule of the nunchaku tree: where it goes, where it comes from, the gitlink it must match."""

    path: str
    url: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    branch: str | None = None


class ArchList(Entry):
    versions: str = Field(description="PEP 440 specifier of the nunchaku versions whose setup.py has this list.")
    arches: list[str] = Field(description="setup.py's spelling: '86', '120a'.")
    source: str


class UnsupportedArch(Entry):
    """An SM setup.py refuses that can be built for diagnostics behind allow_unsupported_arch."""

    arch: str = Field(description="setup.py's spelling, e.g. '90'.")
    family: str
    effect: str = Field(description="What running such a build means, for the warning.")
    precision: Precision
    emulation: str | None = Field(default=None, description="How the arch runs the build's 4-bit MMA where it "
                                  "has none; set: kernels.w4a4_gemm judges correctness and reports the speed.")
    source: str


class SourceBuild(Entry):
    repo: str
    tag: str
    submodule_sets: dict[str, list[Submodule]]
    official_arches: list[ArchList]
    arch_min_nvcc: dict[str, str] = Field(description="The nvcc version setup.py needs before it builds an arch.")
    gcc_min: int
    disk_bytes: int
    job_memory_bytes: int
    build_tools: list[str]
    unsupported_arches: list[UnsupportedArch] = Field(default_factory=list)


class NunchakuCatalog(Entry):
    github: GithubHosting
    mirrors: dict[str, Mirror]
    wheel_filenames: list[WheelFilenameEra]
    unsupported_machines: dict[str, str]
    source_build: SourceBuild
    impostor: Impostor
    releases: list[NunchakuRelease]
    kernel_check: KernelCheckData


# --- gpus.yaml -------------------------------------------------------------------------------


class ArchInfo(Entry):
    """What an SM architecture can run; `precision` is None where nunchaku has no build."""

    arch: str
    family: str
    precision: Precision | None = None
    dtype: Literal["bfloat16", "float16"] = "bfloat16"
    bf16: bool = True
    nunchaku_since: str | None = None
    min_build_cuda: str | None = Field(default=None, description="Lowest nunchaku build CUDA with kernels for it.")
    min_cuda: str | None = Field(default=None, description="Lowest CUDA any torch build needs to run on it.")
    reason: str | None = Field(default=None, description="Why nunchaku cannot serve it.")
    fallback: Literal["fp8", "bf16", "fp16"] | None = Field(
        default=None, description="Plain-ComfyUI precision used instead of nunchaku with precision: auto."
    )
    note: str = ""
    tflops_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    tflops_floor: float

    @property
    def supported(self) -> bool:
        return self.precision is not None


class GpuModel(Entry):
    name: str
    aliases: list[str]
    arch: str
    vram_gib: float
    tflops: float = Field(description="Dense BF16 (FP16 on Turing/Volta) tensor peak, FP32 accumulate.")
    uncertain: bool = False


class GpuCatalog(Entry):
    floor_fraction: float
    archs: list[ArchInfo]
    gpus: list[GpuModel]


# --- torch.yaml ------------------------------------------------------------------------------


class TorchRelease(Entry):
    minor: str
    torch: str
    torchvision: str
    torchaudio: str
    cuda: list[str]
    python: list[str]
    uncertain: bool = False
    note: str = ""


class DriverFloor(Entry):
    cuda: str
    linux: str
    windows: str


class TorchCatalog(Entry):
    index_url: str
    nightly_index_url: str
    venv_bytes: int
    releases: list[TorchRelease]
    driver_floors: list[DriverFloor]


# --- plugins.yaml / comfyui.yaml -------------------------------------------------------------


class NodeComfyUI(Entry):
    versions: str = Field(description="PEP 440 specifier of the ComfyUI versions the node works with.")
    uncertain: bool = False
    note: str = ""


class PluginRelease(Entry):
    version: str
    date: datetime.date
    backend: str = Field(description="PEP 440 specifier of the nunchaku versions it works with.")
    backend_uncertain: bool = False
    nodes_added: list[str] = Field(default_factory=list)
    nodes_removed: list[str] = Field(default_factory=list)
    node_backend: dict[str, str] = Field(default_factory=dict, description="Per-node minimum nunchaku version.")
    node_comfyui: dict[str, NodeComfyUI] = Field(default_factory=dict)
    warns_outside: str | None = Field(
        default=None, description="Backends outside this range load but make the plugin log a warning."
    )
    requires_python: str | None = None
    note: str = ""
    source: str


class RepoAlias(Entry):
    """An older (or unconfirmed newer) URL of the same repository."""

    repo: str
    uncertain: bool = False
    source: str


class PluginSetting(Entry):
    """A loader input a manifest may set in comfyui.plugins[].settings: its choices or numeric range."""

    name: str
    values: list[str] | None = None
    turing_values: list[str] | None = Field(default=None, description="The only choices offered on Turing.")
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    nodes: list[str]
    since: str = Field(description="First plugin release whose loaders take it.")
    offload_below_mib: dict[str, int] = Field(default_factory=dict, description="Per-node 'auto' threshold.")
    source: str


class PluginCatalog(Entry):
    name: str
    repo: str
    repo_aliases: list[RepoAlias] = Field(default_factory=list)
    repo_names: list[str]
    tag: str
    registry_id: str
    releases: list[PluginRelease]
    settings: list[PluginSetting] = Field(default_factory=list)
    nodes_without_backend: list[str] = Field(
        default_factory=list, description="Nodes that import nothing from nunchaku: they register without it."
    )
    nodes_without_backend_source: str = ""


class ComfyUIRelease(Entry):
    version: str
    uncertain: bool = False
    source: str


class ComfyUICatalog(Entry):
    repo: str
    repo_aliases: list[RepoAlias] = Field(default_factory=list)
    tag: str
    releases: list[ComfyUIRelease]


# --- models.yaml -----------------------------------------------------------------------------


class FallbackFile(Entry):
    """A plain ComfyUI file (FP8/BF16) used where nunchaku cannot run."""

    repo: str
    file: str
    folder: str
    node: str
    dtype: Literal["fp8", "bf16", "fp16"]
    size: int | None = None
    size_approx: bool = False
    min_vram_gib: float | None = None
    uncertain: bool = False
    self_contained: bool = Field(
        default=False, description="A checkpoint that bundles its text encoders and VAE: no companion files."
    )
    note: str = ""


class CompanionFile(Entry):
    """A file a model's standard workflow loads next to the diffusion model (text encoder, VAE, LoRA)."""

    repo: str
    file: str
    folder: Literal["text_encoders", "clip", "vae", "loras"]
    node: str = Field(description="The loader node of the standard workflow that reads it.")
    size: int | None = None
    size_approx: bool = False
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    unverified: bool = Field(default=False, description="Named by no official template; `source` says where from.")
    source: str


class CompanionOption(Entry):
    """One candidate for a slot; the first option whose conditions all hold is installed."""

    file: str = Field(description="Key into companion_files.")
    mode: Literal["nunchaku", "plain"] | None = Field(default=None, description="Only on this path.")
    min_vram_gib: float | None = Field(default=None, description="Only on GPUs with at least this much memory.")
    requested: str | None = Field(default=None, description="Only when the manifest's file matches this regex.")


class WorkflowSet(Entry):
    """What a model family's standard workflow loads besides the diffusion model, slot by slot."""

    slots: dict[str, list[CompanionOption]]
    source: str


class ModelEntry(Entry):
    id: str
    repo: str
    files: list[str] = Field(description="Name templates with {precision} and {rank}.")
    ranks: dict[Precision, list[int]] = Field(
        default_factory=dict, description="Ranks per precision; empty for precision-independent files."
    )
    folder: str
    node: str
    comfyui: str | None = Field(default=None, description="PEP 440 specifier of ComfyUI versions it needs.")
    sizes: dict[str, int] = Field(default_factory=dict, description="Bytes per '<precision>_r<rank>' or 'any'.")
    sizes_approx: bool = False
    min_vram_gib: float | None = None
    source: str = ""
    fallback: FallbackFile | None = None
    workflow_set: str | None = Field(default=None, description="Key into workflow_sets.")
    template: str | None = Field(
        default=None, description="The standard workflow in comfyui-workflow-templates-json the set follows."
    )

    @property
    def precision_independent(self) -> bool:
        return not self.ranks

    def size(self, precision: str | None, rank: int | None) -> int | None:
        if self.precision_independent:
            return self.sizes.get("any")
        return self.sizes.get(f"{precision}_r{rank}")


class ModelCatalog(Entry):
    download_url: str
    repo_orgs: list[str]
    models: list[ModelEntry]
    companion_files: dict[str, CompanionFile] = Field(default_factory=dict)
    workflow_sets: dict[str, WorkflowSet] = Field(default_factory=dict)
