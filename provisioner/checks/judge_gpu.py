"""Verdicts for the GPU checks: driver, torch, device, CUDA compatibility, BF16 throughput."""

from __future__ import annotations

import re
from typing import Any

from provisioner.checks import diagnose
from provisioner.checks.criteria import Criteria
from provisioner.checks.model import CheckResult

Observed = dict[str, Any]


def verdict(check_id: str, status: str, summary: str, **fields: Any) -> CheckResult:
    return CheckResult.model_validate({"id": check_id, "status": status, "summary": summary, **fields})


def no_gpu_reason(observed: Observed) -> str | None:
    """Why a GPU check cannot apply here, or None when there is a GPU to check."""
    if observed.get("gpu_present"):
        return None
    if observed.get("venv_missing"):
        return f"no NVIDIA GPU on this host (and the venv interpreter {observed.get('venv_python')} does not exist)"
    return "no NVIDIA GPU on this host (no nvidia-smi answer, no /dev/nvidia* device)"


def arch_number(arch: str | None) -> int | None:
    match = re.fullmatch(r"(?:sm|compute)_(\d{2,3})a?", arch or "")
    return int(match.group(1)) if match else None


def same_arch(expected: str, found: str | None) -> bool:
    return arch_number(expected) == arch_number(found)


def judge_driver(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "gpu.driver"
    skip = no_gpu_reason(observed)
    if skip:
        return verdict(check, "skip", skip)
    gpus = observed.get("gpus") or []
    measured = {"driver_version": observed.get("driver_version"), "cuda_driver": observed.get("cuda_driver"),
                "gpus": [g.get("name") for g in gpus]}
    error = observed.get("nvidia_smi_error")
    if error:
        return verdict(check, "fail", f"nvidia-smi failed: {error.splitlines()[0]}", measured=measured,
                       diagnosis=diagnose.nvidia_smi_error(error))
    if not gpus and not observed.get("cuda_driver"):
        return verdict(check, "fail", "GPU device nodes exist but neither nvidia-smi nor libcuda answers",
                       measured=measured,
                       diagnosis="install the NVIDIA driver's user-space part (nvidia-utils, libcuda)")
    names = ", ".join(f"{g.get('index')}: {g.get('name')}" for g in gpus) or "nvidia-smi not found"
    return verdict(check, "pass", f"driver {observed.get('driver_version') or '?'} (CUDA "
                   f"{observed.get('cuda_driver') or '?'}); {names}", measured=measured)


def judge_torch(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "gpu.torch"
    gpu = bool(observed.get("gpu_present"))
    if observed.get("venv_missing"):
        if not gpu:
            return verdict(check, "skip", no_gpu_reason(observed) or "")
        return verdict(check, "fail", f"the venv interpreter {observed.get('venv_python')} does not exist",
                       diagnosis="run `provision apply` for this manifest first (or fix python.venv / python.adopt)")
    measured = {k: observed.get(k) for k in ("torch", "cuda_build", "cuda_available", "device_count")}
    if observed.get("torch") is None:
        message = f"torch does not import: {observed.get('error')}"
        if not gpu:
            return verdict(check, "skip", f"{no_gpu_reason(observed)}; {message}")
        return verdict(check, "fail", message, diagnosis="install torch into the venv (`provision apply`)")
    if not observed.get("cuda_available"):
        summary = f"torch {observed.get('torch')} cannot use CUDA"
        if not gpu:
            return verdict(check, "skip", f"{no_gpu_reason(observed)}; torch {observed.get('torch')} is installed",
                           measured=measured)
        return verdict(check, "fail", summary, measured=measured, diagnosis=diagnose.torch_cuda_error(
            observed.get("error"), observed.get("torch"), observed.get("cuda_build"), None))
    return verdict(check, "pass", f"torch {observed.get('torch')} (CUDA {observed.get('cuda_build')}) sees "
                   f"{observed.get('device_count')} CUDA device(s)", measured=measured)


def _torch_supports(arch: str, arch_list: list[str]) -> bool:
    """SASS of the same major at a lower or equal minor runs; PTX of any lower arch JIT-compiles."""
    number = arch_number(arch)
    if number is None or not arch_list:
        return True
    for entry in arch_list:
        value = arch_number(entry)
        if value is None:
            continue
        if entry.startswith("compute_") and value <= number:
            return True
        if entry.startswith("sm_") and value // 10 == number // 10 and value <= number and not entry.endswith("a"):
            return True
        if entry.startswith("sm_") and value == number:
            return True
    return False


def judge_device(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "gpu.device"
    skip = no_gpu_reason(observed)
    if skip:
        return verdict(check, "skip", skip)
    if not observed.get("cuda_ready"):
        count = observed.get("device_count") or 0
        index = observed.get("index", 0)
        if count and index >= count:
            return verdict(check, "fail", f"gpu.index is {index} but torch sees {count} device(s)",
                           diagnosis="set gpu.index to an existing device, or check CUDA_VISIBLE_DEVICES")
        return verdict(check, "skip", "CUDA is not usable from torch (see gpu.torch)")
    expected = observed.get("expected_arch") or criteria.expected_arch
    arch = observed.get("arch")
    measured = {k: observed.get(k) for k in ("name", "arch", "capability", "memory_gib", "multiprocessors")}
    thresholds = {"arch": expected}
    if expected not in ("auto", "none") and not same_arch(expected, arch):
        return verdict(check, "fail", f"{observed.get('name')} is {arch}, the manifest expects {expected}",
                       measured=measured, thresholds=thresholds,
                       diagnosis=f"set gpu.arch to {arch} (or auto), or run this manifest on a {expected} host")
    arch_list = list(observed.get("torch_arch_list") or [])
    if arch and not _torch_supports(arch, arch_list):
        return verdict(check, "fail", f"torch has no kernels for {arch} (built for {', '.join(arch_list)})",
                       measured=measured, thresholds=thresholds,
                       diagnosis=f"install a torch build whose targets include {arch} (a newer CUDA build)")
    return verdict(check, "pass", f"{observed.get('name')}, {arch} (manifest: {expected}), "
                   f"{observed.get('memory_gib')} GiB", measured=measured, thresholds=thresholds)


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    match = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def judge_cuda_compat(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "gpu.cuda_compat"
    skip = no_gpu_reason(observed)
    if skip:
        return verdict(check, "skip", skip)
    torch_cuda, driver_cuda = observed.get("torch_cuda"), observed.get("driver_cuda")
    measured = {"torch": observed.get("torch"), "torch_cuda": torch_cuda, "driver_cuda": driver_cuda,
                "driver_version": observed.get("driver_version")}
    if observed.get("torch") is None or torch_cuda is None:
        return verdict(check, "skip", "no CUDA build of torch to compare (see gpu.torch)", measured=measured)
    built, supported = _version_tuple(torch_cuda), _version_tuple(driver_cuda)
    if built is None or supported is None:
        return verdict(check, "skip", "the driver's CUDA version is unknown (libcuda did not answer)",
                       measured=measured)
    thresholds = {"driver_cuda_at_least": torch_cuda}
    if built[0] > supported[0]:
        floor = criteria.driver_floor(torch_cuda)
        upgrade = f"upgrade the driver to {floor}" if floor else "upgrade the driver"
        return verdict(check, "fail", f"torch is built for CUDA {torch_cuda}; the driver supports up to {driver_cuda}",
                       measured=measured, thresholds=thresholds,
                       diagnosis=f"{upgrade}, or install a torch built for CUDA {driver_cuda} or older")
    note = ""
    if built > supported:
        note = " (relies on CUDA minor-version compatibility)"
    return verdict(check, "pass", f"torch CUDA {torch_cuda} <= driver CUDA {driver_cuda}{note}",
                   measured=measured, thresholds=thresholds)


def judge_bf16_gemm(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "gpu.bf16_gemm"
    skip = no_gpu_reason(observed)
    if skip:
        return verdict(check, "skip", skip)
    if observed.get("error"):
        message = str(observed["error"])
        return verdict(check, "fail", f"the matrix product failed: {message.splitlines()[0]}",
                       diagnosis=diagnose.cuda_error(message, observed.get("arch")) or "see the error above")
    if not observed.get("cuda_ready"):
        return verdict(check, "skip", "CUDA is not usable from torch (see gpu.torch)")
    tflops = float(observed["tflops"])
    measured = {k: observed.get(k) for k in ("tflops", "ms", "dtype", "shape", "name", "arch")}
    source = "checks.min_bf16_tflops"
    floor = criteria.min_bf16_tflops
    if floor is None:
        floor = criteria.tflops_floor(str(observed.get("arch")), observed.get("name"))
        source = "catalog floor"
    if floor is None:
        return verdict(check, "pass", f"{tflops:.1f} TFLOP/s {observed.get('dtype')} (no floor known for "
                       f"{observed.get('arch')})", measured=measured)
    thresholds = {"min_tflops": floor, "source": source}
    if tflops < floor:
        return verdict(check, "fail", f"{tflops:.1f} TFLOP/s {observed.get('dtype')} < {floor} ({source})",
                       measured=measured, thresholds=thresholds,
                       diagnosis="the GPU is far below its expected matmul speed: check clocks and power limits "
                       "(nvidia-smi -q -d CLOCK,POWER), other processes on the GPU, and thermal throttling")
    return verdict(check, "pass", f"{tflops:.1f} TFLOP/s {observed.get('dtype')} >= {floor} ({source})",
                   measured=measured, thresholds=thresholds)
