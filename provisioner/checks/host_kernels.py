"""On-host kernel checks: the nunchaku package and its W4A4 layer, or FP8 where nunchaku cannot serve."""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys
from importlib import metadata as importlib_metadata
from typing import Any

from . import host_fatbin, host_first_op, host_fp8, host_w4a4


class KernelState:
    """Which kernel path applies to this GPU, and what was learnt about the nunchaku package."""

    def __init__(self, request: dict[str, Any], gpu: Any) -> None:
        self.request = request
        self.config = request.get("nunchaku", {})
        self.gpu = gpu
        self.package: dict[str, Any] | None = None
        self.extension_loaded = False
        self.extension_path: str | None = None
        # Whether the extension's first op ran in a child process; a crash there would kill this program.
        self.first_op_ok = False

    def arch(self) -> str | None:
        found = self.gpu.device_arch()
        if found:
            return str(found)
        expected = self.request.get("gpu", {}).get("expected_arch", "auto")
        return expected if expected not in ("auto", "none") else None

    def path(self) -> dict[str, Any]:
        """{'path': 'nunchaku' | 'fp8' | None, 'arch': ..., 'reason': ...}; 'emulated' on an arch whose INT4
        MMA ptxas emulates, reached only through the manifest's unsupported-arch source build."""
        arch = self.arch()
        base = arch.rstrip("a") if arch else None
        serves = self.config.get("serves", {})
        fallbacks = self.config.get("fallbacks", {})
        reasons = self.config.get("reasons", {})
        emulated = self.config.get("emulated_int4", {})
        if base is not None and base in emulated and self.config.get("unsupported_arch_override") and \
                self.config.get("enabled", True):
            return {"path": "nunchaku", "arch": arch, "precision": "int4", "emulated": True,
                    "override": True, "reason": emulated[base]}
        if base is not None and base in fallbacks:
            return {"path": fallbacks[base], "arch": arch, "reason": reasons.get(base, "")}
        if not self.config.get("enabled", True):
            return {"path": None, "arch": arch, "reason": "nunchaku is disabled in the manifest (nunchaku.enabled)"}
        if base is None or base in serves:
            return {"path": "nunchaku", "arch": arch, "precision": serves.get(base) if base else None}
        return {"path": None, "arch": arch, "reason": reasons.get(base, f"nunchaku has no kernels for {arch}")}


def _targets(extension: str) -> dict[str, Any]:
    """The extension's SASS/PTX targets; its file goes under 'extension', as 'path' names the kernel path."""
    found = host_fatbin.extension_targets(extension)
    found["extension"] = found.pop("path", extension)
    return found


def _distribution_facts() -> dict[str, Any]:
    try:
        dist = importlib_metadata.distribution("nunchaku")
    except importlib_metadata.PackageNotFoundError:
        return {"installed": False}
    meta: Any = dist.metadata  # an email.message.Message underneath
    files = [str(f) for f in (dist.files or [])]
    return {
        "installed": True,
        "version": dist.version,
        "summary": meta.get("Summary"),
        "author": meta.get("Author") or meta.get("Author-email"),
        "record_extensions": [f for f in files if f.startswith("nunchaku/_C")],
    }


def check_package(ctx: Any) -> dict[str, Any]:
    state: KernelState = ctx.kernels
    observed: dict[str, Any] = dict(ctx.gpu.base(), **state.path())
    if observed["path"] != "nunchaku":
        return observed
    observed.update(_distribution_facts())
    spec = importlib.util.find_spec("nunchaku")
    location = os.path.dirname(spec.origin) if spec is not None and spec.origin else None
    observed["location"] = location
    extensions = sorted(glob.glob(os.path.join(location, "_C*.so")) + glob.glob(os.path.join(location, "_C*.pyd"))) \
        if location else []
    observed["extensions"] = extensions
    state.extension_path = extensions[0] if extensions else None
    torch = ctx.gpu.torch()
    observed["torch"] = torch.__version__ if torch is not None else None
    observed["torch_cuda"] = torch.version.cuda if torch is not None else None
    observed["python_tag"] = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    state.package = observed
    return observed


def check_import(ctx: Any) -> dict[str, Any]:
    """Load nunchaku._C on its own (the ABI question), then the whole package as ComfyUI does."""
    state: KernelState = ctx.kernels
    package = state.package or {}
    observed: dict[str, Any] = dict(ctx.gpu.base(), **state.path())
    observed["package_ok"] = bool(package.get("installed") and state.extension_path)
    observed["version"] = package.get("version")
    observed["torch"] = package.get("torch")
    observed["torch_cuda"] = package.get("torch_cuda")
    observed["python_tag"] = package.get("python_tag")
    if observed["path"] != "nunchaku" or not observed["package_ok"]:
        return observed
    torch = ctx.gpu.torch()
    if torch is None:
        observed["error"] = ctx.gpu.torch_error()
        return observed
    assert state.extension_path is not None
    if ctx.gpu.cuda_ready():
        first_op = host_first_op.probe(sys.executable, state.extension_path, ctx.gpu.index, observed.get("precision"))
        observed["first_op"] = first_op
        state.first_op_ok = bool(first_op.get("ok"))
        if not first_op.get("ok") and "kernel image" in str(first_op.get("error")):
            observed.update(_targets(state.extension_path))
        if first_op.get("stage") == "load" and first_op.get("signal"):
            observed["extension_loaded"] = False
            observed["error"] = f"loading nunchaku._C {first_op['error']}"
            return observed
    # torch first: the extension resolves c10/ATen symbols from the libraries torch has loaded.
    spec = importlib.util.spec_from_file_location("nunchaku._C", state.extension_path)
    try:
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # The package's own `from ._C import ...` then reuses this module instead of loading the library twice.
        sys.modules["nunchaku._C"] = module
        observed["extension_loaded"] = True
        observed["extension_ops"] = sorted(n for n in dir(getattr(module, "ops", None)) if not n.startswith("_"))[:50]
    except Exception as exc:
        observed["extension_loaded"] = False
        observed["error"] = f"{type(exc).__name__}: {exc}"
        return observed
    try:
        importlib.import_module("nunchaku")
        observed["package_imported"] = True
    except Exception as exc:
        observed["package_imported"] = False
        observed["error"] = f"{type(exc).__name__}: {exc}"
    state.extension_loaded = observed.get("package_imported", False)
    return observed


def check_arch(ctx: Any) -> dict[str, Any]:
    state: KernelState = ctx.kernels
    observed: dict[str, Any] = dict(ctx.gpu.base(), **state.path())
    observed["package_ok"] = bool(state.extension_path)
    if observed["path"] != "nunchaku" or not state.extension_path:
        return observed
    observed.update(_targets(state.extension_path))
    return observed


def check_w4a4_gemm(ctx: Any) -> dict[str, Any]:
    state: KernelState = ctx.kernels
    observed: dict[str, Any] = dict(ctx.gpu.base(), **state.path())
    observed["cuda_ready"] = ctx.gpu.cuda_ready()
    observed["package_ok"] = state.extension_loaded
    observed["first_op_ok"] = state.first_op_ok
    if observed["path"] != "nunchaku" or not observed["cuda_ready"] or not state.extension_loaded or \
            not state.first_op_ok:
        return observed
    version = (state.package or {}).get("version")
    observed["version"] = version
    observed.update(host_w4a4.w4a4_layer_check(ctx.gpu.torch(), ctx.gpu.index, observed.get("precision"),
                                               ctx.request.get("gemm", {}), version))
    return observed


def check_fp8_gemm(ctx: Any) -> dict[str, Any]:
    state: KernelState = ctx.kernels
    observed: dict[str, Any] = dict(ctx.gpu.base(), **state.path())
    observed["cuda_ready"] = ctx.gpu.cuda_ready()
    if observed["path"] != "fp8" or not observed["cuda_ready"]:
        return observed
    observed.update(host_fp8.fp8_vs_bf16(ctx.gpu.torch(), ctx.gpu.index, ctx.request.get("gemm", {})))
    return observed
