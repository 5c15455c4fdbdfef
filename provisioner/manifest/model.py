"""The manifest: a host's desired ComfyUI + Nunchaku state, as pydantic models (its JSON Schema too)."""

from __future__ import annotations

import posixpath
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from provisioner.resources.specs import ResourceSpec, SecretFromEnv
from provisioner.values import (
    AbsolutePath,
    EnvKey,
    EnvValue,
    ExtraRoot,
    GitRef,
    Name,
    OwnedPath,
    RelativePath,
    Url,
    check_absolute_path,
    check_model_folder,
    check_name,
    inside_extra_root,
)

AUTO = "auto"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_CONNECTION = re.compile(r"^(local|ssh://[^\s]+|docker://[A-Za-z0-9][A-Za-z0-9_.-]*|docker-image://[^\s]+)$")


class Target(Strict):
    """Where the manifest is applied and under which root directory everything lands."""

    connection: str = Field(
        default="local",
        description="'local', 'ssh://[user@]host[:port]' or an ~/.ssh/config alias as 'ssh://alias', "
        "'docker://CONTAINER', or 'docker-image://IMAGE' (build: provision then commit as `commit_tag`).",
    )
    root: str = Field(
        default=".provision-root",
        description="Target root on the host; every resource path is relative to it. A relative root is "
        "resolved against the working directory of the local transport or the login directory remotely.",
    )
    python: str = Field(default="python3", description="Interpreter that runs the host agent (>= 3.8).")
    extra_roots: list[ExtraRoot] = Field(
        default_factory=list,
        description="Absolute folders outside the root (a model library, an NFS share) where model files and "
        "folders (download and directory resources, comfyui.models_root) may live; nothing else may.",
    )
    user: Name | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    identity_file: str | None = None
    become: bool = Field(default=False, description="Run the agent through sudo.")
    become_password_env: EnvKey | None = Field(
        default=None, description="Environment variable on the controller holding the sudo password."
    )
    # Bounded: an infinite or 1e40 s timeout overflows the socket and select calls that receive it.
    connect_timeout: float = Field(default=10.0, gt=0, le=3600)
    command_timeout: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    inactivity_timeout: float = Field(
        default=120.0, ge=1, le=86400,
        description="Fail a host whose agent sends nothing (not even its heartbeat) for this many seconds.",
    )
    commit_tag: str | None = Field(default=None, description="Image tag committed after a docker-image:// apply.")

    @field_validator("connection")
    @classmethod
    def _connection(cls, value: str) -> str:
        if not _CONNECTION.match(value) or any(ch in value for ch in ";|&$`<>'\"\\"):
            raise ValueError(
                f"{value!r} is not a connection: use 'local', 'ssh://user@host:port', "
                "'docker://CONTAINER' or 'docker-image://IMAGE'"
            )
        return value

    @field_validator("root", "python")
    @classmethod
    def _paths(cls, value: str) -> str:
        return check_absolute_path(value)

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("target.root must not be empty: name the directory everything is installed under, "
                             "such as /opt/comfy")
        if posixpath.normpath(value) in ("/", "//"):
            raise ValueError("target.root must not be '/': the venv, ComfyUI and .provision would land directly "
                             "in the host's root directory; use a directory such as /opt/comfy")
        return value


class GpuSpec(Strict):
    arch: str = Field(default=AUTO, pattern=r"^(auto|none|sm_[0-9]{2,3}a?)$", description="e.g. sm_86, or auto.")
    index: int = Field(default=0, ge=0, description="CUDA device index the service and checks use.")
    min_vram_gb: float | None = Field(default=None, gt=0)
    allow_cpu: bool = Field(default=False, description="Allow a CPU-only install on hosts without a GPU.")


class CudaSpec(Strict):
    version: str = Field(default=AUTO, pattern=r"^(auto|cpu|[0-9]+\.[0-9]+)$", description="torch CUDA build.")
    min_driver: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)*$")


class PythonSpec(Strict):
    version: str = Field(default="3.12", pattern=r"^3\.[0-9]+$")
    interpreter: AbsolutePath | None = Field(default=None, description="Use this interpreter for the venv.")
    venv: OwnedPath = "venv"
    adopt: AbsolutePath | None = Field(
        default=None, description="Adopt an existing venv (absolute path) instead of creating one."
    )
    installer: Literal["auto", "uv", "pip"] = Field(
        default="auto",
        description="What installs packages into the venv: uv where the host has it, else pip (auto); uv "
        "(installed from the package index when the host has none); or pip. uv keeps pip's semantics.",
    )


class TorchSpec(Strict):
    version: str = Field(default=AUTO, pattern=r"^(auto|[0-9]+\.[0-9]+(\.[0-9]+)?|[<>=!~][^;|&$`]*)$")
    index_url: Url | None = None
    packages: list[Name] = Field(default_factory=lambda: ["torch", "torchvision", "torchaudio"])


_BUILD_ARCH = r"^sm_[0-9]{2,3}a?$"


class NunchakuSourceSpec(Strict):
    """Where a source build takes nunchaku from; by default the catalog's repository at the release tag."""

    repo: Url | None = Field(default=None, description="A fork or a mirror; default: the catalog's repository.")
    ref: GitRef | None = Field(default=None, description="Tag, branch or commit; default: the release's tag.")


class NunchakuBuildOptions(Strict):
    """How a source build compiles nunchaku on the host."""

    arches: Literal["auto", "all"] | list[str] = Field(
        default="auto",
        description="auto: the host's GPU; all: nunchaku's official list for the host's nvcc; or a list "
        "such as [sm_86, sm_89].",
    )
    allow_unsupported_arch: bool = Field(
        default=False,
        description="Diagnostics only: build for an arch nunchaku does not support (Hopper's sm_90) by adding "
        "it to setup.py's list in the staged copy; every report says so.",
    )
    max_jobs: int | Literal["auto"] = Field(
        default="auto", description="Parallel compiler jobs; auto: from the host's cores and memory (~4 GB a job)."
    )
    cc: AbsolutePath | None = Field(default=None, description="C compiler, e.g. /usr/bin/gcc.")
    cxx: AbsolutePath | None = Field(default=None, description="C++ compiler, e.g. /usr/bin/g++.")

    @field_validator("arches")
    @classmethod
    def _arches(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("nunchaku.build_options.arches must name at least one arch, e.g. [sm_86]")
            bad = [a for a in value if not re.match(_BUILD_ARCH, a)]
            if bad:
                raise ValueError(f"{', '.join(bad)} is not an arch: write sm_86, sm_120a, ...")
        return value

    @field_validator("max_jobs")
    @classmethod
    def _jobs(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1024:
            raise ValueError("nunchaku.build_options.max_jobs must be between 1 and 1024, or auto")
        return value


class NunchakuSpec(Strict):
    enabled: bool = True
    version: str = Field(default=AUTO, pattern=r"^(auto|[0-9][0-9A-Za-z.+]*|[<>=!~][^;|&$`]*)$")
    precision: Literal["auto", "int4", "fp4"] = "auto"
    wheel_url: Url | None = Field(default=None, description="Override the resolved wheel URL.")
    wheel_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    allow_nightly_torch_builds: bool = False
    build: Literal["auto", "wheel", "source"] = Field(
        default="auto",
        description="auto: a prebuilt wheel where one fits, else a source build on the host; wheel: never "
        "build; source: always build on the host.",
    )
    source: NunchakuSourceSpec = Field(default_factory=NunchakuSourceSpec)
    build_options: NunchakuBuildOptions = Field(default_factory=NunchakuBuildOptions)


class PluginSpec(Strict):
    name: Name
    repo: Url
    ref: GitRef = AUTO
    requirements: bool = Field(default=True, description="Install the plugin's requirements.txt.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Plugin defaults, e.g. cpu_offload.")


class ComfyUISpec(Strict):
    repo: Url = "https://github.com/comfyanonymous/ComfyUI"
    ref: GitRef = AUTO
    path: OwnedPath = "ComfyUI"
    plugins: list[PluginSpec] = Field(default_factory=list)
    models_root: str | None = Field(
        default=None, description="Shared models root, wired in through extra_model_paths.yaml: under the root, "
        "or an absolute folder inside one of target.extra_roots.",
    )

    @field_validator("models_root")
    @classmethod
    def _models_root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_model_folder(value)


MODEL_FOLDERS = (
    "checkpoints", "clip", "clip_vision", "controlnet", "diffusion_models", "embeddings", "loras",
    "text_encoders", "unet", "upscale_models", "vae", "style_models",
)


class ModelSpec(Strict):
    """One model file; `{precision}` and `{rank}` in names are filled in by the resolver."""

    repo: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    file: str = Field(pattern=r"^[A-Za-z0-9{}_.-][A-Za-z0-9{}_./-]*$")
    revision: GitRef = "main"
    url: Url | None = None
    folder: str = Field(default="diffusion_models")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(default=None, ge=0)
    rank: int | None = Field(default=None, ge=1)
    state: Literal["present", "absent"] = Field(
        default="present", description="absent: delete the file from the host (no --prune needed).")
    companions: bool = Field(
        default=True,
        description="Also install what this model's standard workflow loads with it (text encoders, VAE, "
        "LoRA), as the catalog lists them; false when those files come from elsewhere.",
    )

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        if value not in MODEL_FOLDERS:
            raise ValueError(f"unknown ComfyUI model folder {value!r}; one of: {', '.join(MODEL_FOLDERS)}")
        return value

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise ValueError("model file names must not contain '..' segments")
        return value


class ServiceInstance(Strict):
    """One ComfyUI of several on a host: the GPU it serves from and its port."""

    gpu: int = Field(ge=0, description="nvidia-smi index of the GPU this ComfyUI uses (it sees it as cuda:0).")
    port: int = Field(ge=1, le=65535)
    name: Name | None = Field(default=None, description="Service name; default comfyui-gpuN.")


class ServiceSpec(Strict):
    enabled: bool = True
    manager: Literal["auto", "systemd", "process", "container"] = "auto"
    listen: str = Field(default="127.0.0.1", pattern=r"^[0-9A-Za-z.:-]+$")
    port: int = Field(default=8188, ge=1, le=65535)
    extra_args: list[str] = Field(default_factory=list)
    # Real ComfyUI takes 15-25 s (more with many plugins) before /system_stats answers.
    ready_timeout: float = Field(default=180.0, gt=0, le=3600,
                                 description="Seconds ComfyUI may take, started or restarted, to answer /system_stats.")
    instances: list[ServiceInstance] = Field(
        default_factory=list,
        description="One ComfyUI per entry, each on its own GPU and port (e.g. [{gpu: 0, port: 8188}, "
        "{gpu: 1, port: 8189}]); empty: one ComfyUI on gpu.index and service.port.",
    )

    @field_validator("extra_args")
    @classmethod
    def _args(cls, args: list[str]) -> list[str]:
        for arg in args:
            if not re.match(r"^[A-Za-z0-9=_.,:/+-]+$", arg):
                raise ValueError(f"service argument {arg!r} may use only letters, digits and = _ . , : / + -")
            if arg.split("=", 1)[0] == "--cuda-device":
                # The service gets CUDA_VISIBLE_DEVICES from gpu.index; --cuda-device would override it
                # behind the checks' back.
                raise ValueError("--cuda-device is set for you: choose the GPU with gpu.index, or one per "
                                 "ComfyUI with service.instances")
        return args

    @field_validator("instances")
    @classmethod
    def _distinct(cls, instances: list[ServiceInstance]) -> list[ServiceInstance]:
        ports = [str(i.port) for i in instances]
        names = [i.name or f"comfyui-gpu{i.gpu}" for i in instances]
        for what, values in (("port", ports), ("name", names)):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"two service.instances share the {what} {', '.join(twice)}: give each its own"
                                 + (" (two instances on one GPU need distinct names)" if what == "name" else ""))
        return instances


class ChecksSpec(Strict):
    gpu: bool = True
    kernels: bool = True
    smoke: bool = True
    nodes: list[Name] = Field(default_factory=list, description="ComfyUI node classes that must be registered.")
    min_bf16_tflops: float | None = Field(default=None, gt=0)
    min_speedup: float | None = Field(default=None, gt=0)
    workflow: RelativePath | None = None


class HandlerSpec(Strict):
    """Run once at the end of an apply in which a resource that notifies it changed:
    a command (`argv`), or the restart of a service resource (`restart: NAME`)."""

    argv: list[str] | None = Field(default=None, min_length=1)
    restart: Name | list[Name] | None = Field(default=None, description="Name(s) of service resources to restart.")
    cwd: RelativePath | None = None
    env: dict[EnvKey, EnvValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_action(self) -> HandlerSpec:
        if (self.argv is None) == (self.restart is None):
            raise ValueError("a handler needs exactly one of 'argv' or 'restart'")
        return self


class Manifest(Strict):
    """Desired state of one host."""

    name: Name
    description: str = ""
    extends: str | list[str] | None = Field(
        default=None, description="Base manifest(s), relative to this file, deep-merged under this one."
    )
    target: Target = Field(default_factory=Target)
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    cuda: CudaSpec = Field(default_factory=CudaSpec)
    python: PythonSpec = Field(default_factory=PythonSpec)
    torch: TorchSpec = Field(default_factory=TorchSpec)
    nunchaku: NunchakuSpec = Field(default_factory=NunchakuSpec)
    comfyui: ComfyUISpec | None = None
    models: list[ModelSpec] = Field(default_factory=list)
    env: dict[EnvKey, EnvValue] = Field(default_factory=dict)
    secrets: dict[EnvKey, SecretFromEnv] = Field(default_factory=dict)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    checks: ChecksSpec = Field(default_factory=ChecksSpec)
    roles: list[Name] = Field(default_factory=list, description="Roles (resource lists) to expand, in order.")
    role_paths: list[str] = Field(default_factory=list, description="Extra role directories, relative to this file.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Variables for roles and templates.")
    resources: list[ResourceSpec] = Field(
        default_factory=list, description="Extra resources; one with the same id as a role's replaces it."
    )
    handlers: dict[Name, HandlerSpec] = Field(default_factory=dict)

    @field_validator("role_paths")
    @classmethod
    def _role_paths(cls, paths: list[str]) -> list[str]:
        return [check_absolute_path(p) for p in paths]

    @model_validator(mode="after")
    def _models_root_inside_extra_roots(self) -> Manifest:
        root = self.comfyui.models_root if self.comfyui else None
        if root and root.startswith("/") and not inside_extra_root(root, self.target.extra_roots):
            listed = ", ".join(self.target.extra_roots) or "none"
            raise ValueError(f"comfyui.models_root {root} is outside the target root and outside every "
                             f"target.extra_roots entry ({listed}): add its folder to target.extra_roots, or "
                             "give a path under the root")
        return self

    @field_validator("vars")
    @classmethod
    def _var_names(cls, values: dict[str, Any]) -> dict[str, Any]:
        for key in values:
            check_name(key)
        return values
