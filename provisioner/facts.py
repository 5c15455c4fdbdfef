"""Host facts as returned by the agent's `facts` operation, typed for the resolver.

Unknown keys are ignored so that a newer agent can add facts without breaking an older controller;
every fact the agent may fail to gather is optional.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner.errors import ProvisionError
from provisioner.input_file import InputFileError, read_input_text


class FactsError(ProvisionError):
    """A facts file could not be read or does not look like the agent's facts."""


class _Facts(BaseModel):
    model_config = ConfigDict(extra="ignore")


class OsRelease(_Facts):
    id: str | None = None
    version_id: str | None = None
    pretty: str | None = None


class PythonInstall(_Facts):
    command: str
    path: str
    version: str


class User(_Facts):
    uid: int
    name: str


class Gpu(_Facts):
    index: int | None = None
    name: str = ""
    compute_capability: str | None = None
    arch: str | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None

    @property
    def sm(self) -> str | None:
        """'sm_86' from `arch`, or derived from `compute_capability` ('8.6')."""
        if self.arch:
            return self.arch
        cap = self.compute_capability
        if cap and cap[0].isdigit():
            return "sm_" + cap.replace(".", "")
        return None


class Nvidia(_Facts):
    driver: str | None = None
    cuda: str | None = Field(default=None, description="Highest CUDA version the driver supports (nvidia-smi).")
    gpus: list[Gpu] = Field(default_factory=list)
    error: str | None = None


class TorchInstall(_Facts):
    version: str
    cuda: str | None = None
    local: str | None = None


class NunchakuInstall(_Facts):
    version: str
    real: bool = Field(description="False for the unrelated PyPI package of the same name (no compiled _C).")
    url: str | None = None


class Venv(_Facts):
    path: str
    torch: TorchInstall | None = None
    nunchaku: NunchakuInstall | None = None
    packages: dict[str, str] = Field(default_factory=dict)


class CustomNode(_Facts):
    """An entry of ComfyUI's custom_nodes folder: a git checkout, a registry install, another folder, or a
    single .py file."""

    name: str
    kind: Literal["git", "cnr", "dir", "file"]
    disabled: bool = False
    head: str | None = None
    origin: str | None = None
    cnr_id: str | None = Field(default=None, description="Registry id of a registry (CNR) install.")
    version: str | None = None


class ComfyCheckout(_Facts):
    path: str
    head: str | None = Field(default=None, description="ComfyUI's git HEAD commit; None when not a checkout.")
    origin: str | None = None
    custom_nodes: list[CustomNode] = Field(default_factory=list)


class Compiler(_Facts):
    path: str
    version: str | None = None
    #: nvcc only: the CUDA release ('13.0') as `nvcc --version` prints it.
    release: str | None = None
    error: str | None = None

    @property
    def major(self) -> int | None:
        text = self.release or self.version
        head = text.split(".")[0] if text else ""
        return int(head) if head.isdigit() else None


class Toolchain(_Facts):
    """What a source build would compile with; every part is None where the host has none."""

    cpu_count: int | None = None
    nvcc: Compiler | None = Field(default=None, description="Found as torch's cpp_extension finds it.")
    cuda_home: str | None = None
    gcc: Compiler | None = Field(default=None, description="gcc on PATH.")
    compilers: list[Compiler] = Field(default_factory=list, description="The compilers the request named.")

    def compiler(self, path: str) -> Compiler | None:
        return next((c for c in self.compilers if c.path == path), None)


class Facts(_Facts):
    """Everything the agent reports about a host in one call."""

    system: str | None = Field(default=None, description="platform.system(): Linux, Darwin, Windows.")
    os: OsRelease = Field(default_factory=OsRelease)
    kernel: str | None = None
    arch: str = Field(description="Machine architecture, e.g. x86_64 or aarch64.")
    hostname: str | None = None
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    root: str | None = None
    disk_free_bytes: int | None = None
    agent_python: str | None = None
    pythons: list[PythonInstall] = Field(default_factory=list)
    systemd: bool = False
    in_container: bool = False
    user: User | None = None
    nvidia: Nvidia = Field(default_factory=Nvidia)
    venv: Venv | None = None
    comfyui: ComfyCheckout | None = Field(default=None, description="Only when the request names comfy_dir.")
    toolchain: Toolchain | None = Field(default=None, description="None from an agent older than source builds.")

    def gpu(self, index: int) -> Gpu | None:
        """The GPU with CUDA index `index` (falling back to list position when indexes are missing)."""
        for position, gpu in enumerate(self.nvidia.gpus):
            if (gpu.index if gpu.index is not None else position) == index:
                return gpu
        return None


def load_facts(path: Path | str) -> Facts:
    """Read facts saved as JSON (e.g. from `provision facts --json`) for offline resolution."""
    path = Path(path)
    try:
        text = read_input_text(path)
    except InputFileError as exc:
        reason = "facts file not found" if exc.issue.message == "file not found" else f"facts file {exc.issue.message}"
        where = f"{path}:{exc.issue.line}:{exc.issue.column}" if exc.issue.line else str(path)
        raise FactsError(f"{where}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactsError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise FactsError(f"{path}: the JSON nests too deeply to be the agent's facts") from None
    if not isinstance(data, dict):
        raise FactsError(f"{path}: facts must be a JSON object as returned by the agent's facts operation")
    try:
        return Facts.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"  {'.'.join(str(p) for p in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        ]
        raise FactsError("\n".join([f"{path}: facts do not match the agent's format:", *problems])) from None
