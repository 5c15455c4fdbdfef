"""What the resolver returns: the chosen combination with a reason per choice, or every violation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["nunchaku", "plain", "cpu"]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Violation(_Result):
    """Why the manifest cannot be satisfied on this host, and a concrete change that would fix it."""

    field: str = Field(description="Manifest field (or 'host') the problem is about.")
    reason: str
    fix: str


class GpuChoice(_Result):
    index: int | None
    name: str | None
    arch: str
    family: str | None
    precision: Literal["int4", "fp4"] | None
    dtype: Literal["bfloat16", "float16"]
    vram_gib: float | None
    tflops_floor: float | None
    tflops_dtype: Literal["bfloat16", "float16"]
    why: str


class TorchChoice(_Result):
    version: str
    torchvision: str
    torchaudio: str
    cuda: str | None = Field(description="CUDA build, None for the CPU build.")
    index_url: str
    requirements: list[str] = Field(description="Exact pins, e.g. torch==2.8.0.")
    why: str


class SubmoduleChoice(_Result):
    path: str
    url: str
    commit: str | None = Field(description="The gitlink the checkout must match; None with nunchaku.source.")


class BuildPrerequisites(_Result):
    """What the host's preflight checks before the build starts (the wheel_build resource's prerequisites)."""

    nvcc_major: str | None = Field(description="Must equal torch.version.cuda's major.")
    gcc_min: int
    ninja: bool = True
    python_headers: bool = True
    min_free_bytes: int
    job_memory_bytes: int


class SourceBuildChoice(_Result):
    """nunchaku compiled on the host against the venv's torch, instead of a prebuilt wheel."""

    version: str
    repo: str
    ref: str
    commit: str | None = Field(description="What ref must resolve to; None for a fork or another ref.")
    submodules: list[SubmoduleChoice]
    arches: list[str] = Field(description="SM targets in setup.py's spelling, e.g. ['121a'].")
    install_mode: Literal["FAST", "ALL"]
    add_supported_arches: list[str] = Field(default_factory=list, description="The unsupported-arch override.")
    max_jobs: int | None = Field(description="nunchaku.build_options.max_jobs; None: auto on the host.")
    predicted_jobs: int | None = Field(default=None, description="What auto gives with the facts' cores and memory.")
    cc: str | None = None
    cxx: str | None = None
    cuda_home: str | None = None
    torch: str = Field(description="The torch version built against.")
    cuda: str = Field(description="torch.version.cuda of that torch.")
    prerequisites: BuildPrerequisites
    build_key: str
    kernel_path: str = Field(description="What runs the W4A4 layers once it is built.")
    warnings: list[str] = Field(default_factory=list)
    why: str


class NunchakuChoice(_Result):
    version: str
    filename: str
    urls: list[str] = Field(description="Primary (GitHub) first, then mirrors.")
    torch: str = Field(description="Torch major.minor the wheel is built for.")
    cuda: str
    python: str
    platform: str
    nightly_torch_build: bool
    sha256: str | None = None
    why: str
    build: SourceBuildChoice | None = Field(default=None, description="Set when the wheel is built on the host.")


class PluginSettingChoice(_Result):
    """A loader input of ComfyUI-nunchaku, from the host's facts or the manifest's settings."""

    name: str
    value: str | int | float
    source: Literal["host", "manifest"]
    nodes: list[str] = Field(description="The loader nodes that take it.")
    why: str


class PluginChoice(_Result):
    name: str
    repo: str
    ref: str
    version: str | None
    nodes: list[str]
    settings: list[PluginSettingChoice] = Field(default_factory=list)
    why: str


class ComfyUIChoice(_Result):
    repo: str
    ref: str
    version: str | None
    why: str


class ModelChoice(_Result):
    repo: str | None
    file: str = Field(description="Path inside the repo.")
    filename: str = Field(description="Local file name inside the folder.")
    folder: str
    url: str | None
    revision: str
    size: int | None
    size_approx: bool = False
    sha256: str | None = None
    precision: str | None
    rank: int | None
    node: str | None
    fallback: bool = False
    role: str | None = Field(default=None, description="diffusion model, text encoder, VAE, LoRA or checkpoint.")
    companion_of: str | None = Field(default=None, description="The catalog model whose standard workflow needs it.")
    why: str


class Resolution(_Result):
    """Either a full combination (violations empty) or all violations found."""

    mode: Mode | None = Field(default=None, description="nunchaku, plain (no nunchaku) or cpu.")
    gpu: GpuChoice | None = None
    platform: str | None = None
    python: str | None = None
    torch: TorchChoice | None = None
    nunchaku: NunchakuChoice | None = None
    plugin: PluginChoice | None = None
    comfyui: ComfyUIChoice | None = None
    models: list[ModelChoice] = Field(default_factory=list)
    absent_models: list[ModelChoice] = Field(
        default_factory=list, description="Files the manifest marks state: absent, removed from the host.")
    fallback: str | None = Field(default=None, description="Why plain ComfyUI loaders replace nunchaku.")
    notes: list[str] = Field(default_factory=list)
    violations: list[Violation] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations
