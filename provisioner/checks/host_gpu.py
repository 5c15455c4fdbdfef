"""On-host GPU checks: the driver, torch's view of the GPU, and a timed BF16 matrix product."""

from __future__ import annotations

import ctypes
import glob
import importlib
import os
import shutil
import subprocess
from typing import Any

from . import host_timing


class GpuState:
    """Driver and torch facts, gathered once and shared by the GPU and kernel checks."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.index = int(request.get("gpu", {}).get("index", 0))  # torch's, in this (narrowed) process
        self.physical = int(request.get("gpu", {}).get("physical", self.index))  # nvidia-smi's
        self._driver: dict[str, Any] | None = None
        self._torch: Any = None
        self._torch_error: str | None = None
        self._torch_loaded = False

    # --- driver ---------------------------------------------------------------------------

    def driver(self) -> dict[str, Any]:
        if self._driver is None:
            self._driver = _query_driver()
        return self._driver

    def gpu_present(self) -> bool:
        """Is there NVIDIA hardware at all? Without it the GPU checks skip instead of failing."""
        info = self.driver()
        return bool(info.get("gpus") or info.get("device_nodes") or info.get("nvidia_smi_error"))

    # --- torch ----------------------------------------------------------------------------

    def torch(self) -> Any:
        """The torch module, or None (the reason is in torch_error)."""
        if not self._torch_loaded:
            self._torch_loaded = True
            if self.request.get("venv_missing"):
                self._torch_error = "venv interpreter {} does not exist".format(self.request.get("venv_python"))
            else:
                try:
                    self._torch = importlib.import_module("torch")
                except Exception as exc:  # ImportError, or OSError from a broken CUDA library
                    self._torch_error = f"{type(exc).__name__}: {exc}"
        return self._torch

    def torch_error(self) -> str | None:
        self.torch()
        return self._torch_error

    def cuda_ready(self) -> bool:
        torch = self.torch()
        return bool(torch is not None and torch.cuda.is_available() and torch.cuda.device_count() > self.index)

    def device_arch(self) -> str | None:
        """sm_XY of the checked device, from torch or else nvidia-smi."""
        if self.cuda_ready():
            major, minor = self.torch().cuda.get_device_capability(self.index)
            return f"sm_{major}{minor}"
        gpus = self.driver().get("gpus") or []
        for gpu in gpus:
            if gpu.get("index") == self.physical and gpu.get("compute_cap"):
                return "sm_" + str(gpu["compute_cap"]).replace(".", "")
        return None

    def base(self) -> dict[str, Any]:
        """Fields every GPU-dependent observation carries, so the judge can tell skip from fail."""
        return {"gpu_present": self.gpu_present(), "venv_missing": bool(self.request.get("venv_missing")),
                "venv_python": self.request.get("venv_python")}


def _query_driver() -> dict[str, Any]:
    info: dict[str, Any] = {"device_nodes": sorted(glob.glob("/dev/nvidia[0-9]*")), "gpus": []}
    smi = shutil.which("nvidia-smi")
    info["nvidia_smi"] = smi
    if smi:
        fields = "index,name,driver_version,compute_cap,memory.total"
        proc = _run([smi, "--query-gpu=" + fields, "--format=csv,noheader,nounits"])
        if proc[0] != 0 and "compute_cap" in proc[1] + proc[2]:
            # Drivers before 510 do not know compute_cap; torch reports it instead.
            fields = "index,name,driver_version,memory.total"
            proc = _run([smi, "--query-gpu=" + fields, "--format=csv,noheader,nounits"])
        if proc[0] == 0:
            names = fields.split(",")
            for line in proc[1].splitlines():
                values = [v.strip() for v in line.split(",")]
                if len(values) == len(names):
                    gpu: dict[str, Any] = dict(zip(names, values))  # noqa: B905 - zip(strict=) needs Python 3.10
                    gpu["index"] = int(gpu["index"])
                    info["gpus"].append(gpu)
            if info["gpus"]:
                info["driver_version"] = info["gpus"][0].get("driver_version")
        else:
            info["nvidia_smi_error"] = (proc[1] + proc[2]).strip()[-2000:] or f"nvidia-smi exited {proc[0]}"
    info["cuda_driver"] = _cuda_driver_version()
    return info


def _run(argv: list[str]) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=60,
                              text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def _cuda_driver_version() -> str | None:
    """The CUDA version the driver supports ('13.0'), asked of libcuda itself."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return f"{version.value // 1000}.{(version.value % 1000) // 10}"


# --- checks -----------------------------------------------------------------------------------


def check_driver(ctx: Any) -> dict[str, Any]:
    gpu: GpuState = ctx.gpu
    observed = gpu.base()
    observed.update(gpu.driver())
    return observed


def check_torch(ctx: Any) -> dict[str, Any]:
    gpu: GpuState = ctx.gpu
    observed = gpu.base()
    torch = gpu.torch()
    if torch is None:
        observed["error"] = gpu.torch_error()
        return observed
    observed.update({
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available()),
        "device_count": int(torch.cuda.device_count()) if torch.version.cuda else 0,
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    })
    if torch.version.cuda and not observed["cuda_available"] and gpu.gpu_present():
        observed["error"] = _cuda_init_error(torch)
    return observed


def _cuda_init_error(torch: Any) -> str | None:
    """Why torch cannot use CUDA: initialising it raises the message that says so."""
    try:
        torch.cuda.init()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_device(ctx: Any) -> dict[str, Any]:
    gpu: GpuState = ctx.gpu
    observed = gpu.base()
    observed["expected_arch"] = ctx.request.get("gpu", {}).get("expected_arch", "auto")
    observed["index"] = gpu.index
    observed["physical_index"] = gpu.physical
    observed["visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    torch = gpu.torch()
    if not gpu.cuda_ready():
        observed["cuda_ready"] = False
        observed["device_count"] = int(torch.cuda.device_count()) if torch is not None and torch.version.cuda else 0
        return observed
    props = torch.cuda.get_device_properties(gpu.index)
    observed.update({
        "cuda_ready": True,
        "name": torch.cuda.get_device_name(gpu.index),
        "capability": list(torch.cuda.get_device_capability(gpu.index)),
        "arch": gpu.device_arch(),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "torch_arch_list": list(torch.cuda.get_arch_list()),
    })
    return observed


def check_cuda_compat(ctx: Any) -> dict[str, Any]:
    gpu: GpuState = ctx.gpu
    observed = gpu.base()
    torch = gpu.torch()
    observed["torch_cuda"] = torch.version.cuda if torch is not None else None
    observed["torch"] = torch.__version__ if torch is not None else None
    observed["driver_cuda"] = gpu.driver().get("cuda_driver")
    observed["driver_version"] = gpu.driver().get("driver_version")
    return observed


def check_bf16_gemm(ctx: Any) -> dict[str, Any]:
    gpu: GpuState = ctx.gpu
    observed = gpu.base()
    if not gpu.cuda_ready():
        observed["cuda_ready"] = False
        return observed
    torch = gpu.torch()
    gemm = ctx.request.get("gemm", {})
    size = int(gemm.get("size", 8192))
    major = torch.cuda.get_device_capability(gpu.index)[0]
    # Turing and older have no BF16 tensor cores: their matmul floor is measured in FP16.
    dtype = torch.bfloat16 if major >= 8 else torch.float16
    device = torch.device("cuda", gpu.index)
    with torch.cuda.device(device):
        tflops, ms = host_timing.matmul_tflops(torch, device, size, size, size, dtype, gemm)
    observed.update({"cuda_ready": True, "name": torch.cuda.get_device_name(gpu.index),
                     "arch": gpu.device_arch(), "dtype": str(dtype).replace("torch.", ""),
                     "shape": [size, size, size], "tflops": round(tflops, 1), "ms": round(ms, 4)})
    return observed
