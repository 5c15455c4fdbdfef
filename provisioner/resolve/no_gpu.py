"""A host without an NVIDIA GPU, told the same way by every command (plan, apply, check, fleet plan, init).

A manifest for the GPU the host has (gpu.arch: auto) cannot be met there: the fix is gpu.allow_cpu: true
for a CPU-only install, or a declared gpu.arch when the host builds for another machine.
"""

from __future__ import annotations

NO_GPU_REASON = "no NVIDIA GPU found on the host"
NO_GPU_FIX = ("Install the NVIDIA driver so that nvidia-smi lists the GPU; or set gpu.allow_cpu: true for a "
              "CPU-only install; or set gpu.arch (e.g. sm_89) when building for another machine")


def refused_without_gpu(arch: str, allow_cpu: bool, cuda_version: str, gpu_count: int) -> bool:
    """True when the manifest needs a GPU the host does not have."""
    if gpu_count or allow_cpu or arch == "none" or cuda_version == "cpu":
        return False
    return arch == "auto"


def no_gpu_message(host: str, detail: str = "") -> str:
    return f"{host}: {NO_GPU_REASON}{detail}.\n  fix: {NO_GPU_FIX}"
