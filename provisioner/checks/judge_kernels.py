"""Verdicts for the kernel checks: the nunchaku package, its import and targets, and the FP8 GEMM."""

from __future__ import annotations

import re
from typing import Any

from packaging.version import InvalidVersion, Version

from provisioner.checks import diagnose
from provisioner.checks.criteria import FP8_ERROR_BOUND, Criteria
from provisioner.checks.judge_gpu import Observed, arch_number, no_gpu_reason, verdict
from provisioner.checks.model import CheckResult


def not_nunchaku(observed: Observed) -> str | None:
    path = observed.get("path")
    if path == "nunchaku":
        return None
    reason = observed.get("reason") or "nunchaku does not apply"
    if path == "fp8":
        return f"{reason}; the FP8 path is checked instead (kernels.fp8_gemm)"
    return reason


def override_note(observed: Observed) -> str:
    """Said on every kernel verdict of a build that only the manifest's override made possible."""
    if not observed.get("override"):
        return ""
    return (f" [unsupported-arch build override: nunchaku does not support {observed.get('arch')}; "
            "nunchaku.build_options.allow_unsupported_arch, for diagnostics only]")


def _impostor_version(version: str | None) -> bool:
    """One of the PyPI project's releases, compared as PEP 440 versions (0.16.1 is 0.16.1.0)."""
    try:
        return Version(version or "") in {Version(v) for v in diagnose.IMPOSTOR_VERSIONS}
    except InvalidVersion:
        return False


def _advisor(criteria: Criteria, observed: Observed) -> diagnose.WheelAdvisor:
    version = observed.get("version")
    python = observed.get("python_tag")
    if criteria.built_on_host:
        return lambda torch, cuda: criteria.built_on_host
    return lambda torch, cuda: _install(criteria.wheel_for(version, torch, cuda, python))


def _install(wheel: str | None) -> str | None:
    return f"install {wheel}" if wheel else None


def judge_package(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "kernels.nunchaku_package"
    skip = not_nunchaku(observed)
    if skip:
        return verdict(check, "skip", skip)
    version = observed.get("version")
    torch, torch_cuda = observed.get("torch"), observed.get("torch_cuda")
    hint = diagnose.import_error("No module named 'nunchaku'", torch, torch_cuda, None, _advisor(criteria, observed))
    measured = {k: observed.get(k) for k in ("version", "summary", "extensions", "location", "torch", "torch_cuda")}
    if not observed.get("installed"):
        return verdict(check, "fail", "nunchaku is not installed in the venv", measured=measured, diagnosis=hint)
    install = hint.split("; ", 1)[-1]
    if observed.get("summary") == diagnose.IMPOSTOR_SUMMARY or (
            _impostor_version(version) and not observed.get("extensions")):
        return verdict(check, "fail", f"the PyPI package 'nunchaku' {version} (\"{observed.get('summary')}\") is "
                       "installed, not MIT HAN Lab's nunchaku", measured=measured,
                       diagnosis=f"wrong package: `pip uninstall nunchaku` (the PyPI project of that name is "
                       f"unrelated), then {install}")
    if not observed.get("extensions"):
        return verdict(check, "fail", f"nunchaku {version} has no compiled extension nunchaku/_C*.so",
                       measured=measured, diagnosis=f"not a release wheel (or a failed source build); {install}")
    built_torch, built_cuda = diagnose.wheel_label(version)
    if built_torch is None:
        return verdict(check, "fail", f"nunchaku {version} carries no +torchX.Y / +cuX.YtorchX.Y label",
                       measured=measured, diagnosis=f"not a release wheel, so its torch build is unknown; {install}")
    torch_minor = diagnose.torch_minor(torch)
    thresholds = {"torch": built_torch, "cuda": built_cuda}
    if torch_minor and torch_minor != built_torch:
        return verdict(check, "fail", f"nunchaku {version} is built for torch {built_torch}; the venv has "
                       f"torch {torch}",
                       measured=measured, thresholds=thresholds, diagnosis=f"torch ABI mismatch ahead; {install}")
    if built_cuda and torch_cuda and diagnose.torch_minor(torch_cuda) != built_cuda:
        return verdict(check, "fail", f"nunchaku {version} is built for CUDA {built_cuda}; torch brings CUDA "
                       f"{torch_cuda}", measured=measured, thresholds=thresholds, diagnosis=install)
    return verdict(check, "pass", f"nunchaku {version} with {len(observed['extensions'])} compiled extension(s), "
                   f"built for torch {built_torch} (venv: {torch}){override_note(observed)}", measured=measured,
                   thresholds=thresholds)


def judge_import(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "kernels.nunchaku_import"
    skip = not_nunchaku(observed)
    if skip:
        return verdict(check, "skip", skip)
    if not observed.get("package_ok"):
        return verdict(check, "skip", "no genuine nunchaku package to import (see kernels.nunchaku_package)")
    measured = {k: observed.get(k) for k in ("version", "torch", "extension_loaded", "package_imported", "first_op")}
    note = override_note(observed)
    first_op = observed.get("first_op") or {}
    if first_op and not first_op.get("ok"):
        return _first_op_failure(check, observed, first_op, measured, note)
    error = observed.get("error")
    if error:
        what = "nunchaku._C" if not observed.get("extension_loaded") else "the nunchaku package"
        return verdict(check, "fail", f"{what} does not import: {str(error).splitlines()[0]}{note}", measured=measured,
                       diagnosis=diagnose.import_error(str(error), observed.get("torch"), observed.get("torch_cuda"),
                                                       observed.get("version"), _advisor(criteria, observed)))
    ran = f", its first op runs on {observed.get('arch')}" if first_op.get("op") else ""
    return verdict(check, "pass", f"nunchaku._C loads{ran}, and nunchaku imports against torch "
                   f"{observed.get('torch')}{note}", measured=measured)


def _first_op_failure(check: str, observed: Observed, first_op: dict[str, Any], measured: dict[str, Any],
                      note: str) -> CheckResult:
    """The child that loaded nunchaku._C and ran its first op failed: a missing arch, a crash, or an error."""
    arch = observed.get("arch")
    message = str(first_op.get("error") or "")
    stage = "loading nunchaku._C" if first_op.get("stage") in ("load", "torch", "start") else \
        "nunchaku._C loads, but its first op (quantize_w4a4_act_fuse_lora)"
    if "no kernel image is available" in message:
        sass = list(observed.get("sass") or [])
        has = f"it has SASS for {', '.join(sass)}" if sass else "no SASS targets are readable in it"
        ptx = list(observed.get("ptx") or [])
        has += f" and PTX for {', '.join(ptx)}" if ptx else " and no PTX"
        return verdict(check, "fail", f"{stage} fails on {arch}: no kernel image is available for this GPU{note}",
                       measured=dict(measured, sass=sass, ptx=ptx),
                       diagnosis=f"the wheel lacks {arch or 'this GPU'}'s SASS ({has}): "
                       + str(diagnose.cuda_error(message, arch, sass)))
    if first_op.get("signal"):
        return verdict(check, "fail", f"{stage} killed the process with {first_op['signal']}{note}",
                       measured=measured,
                       diagnosis="the extension loads but crashes in host code: typically a build whose compiler links "
                       "libstdc++ statically (it then clashes with torch's). Rebuild with the system compiler "
                       "(nunchaku.build_options cc: /usr/bin/gcc, cxx: /usr/bin/g++), or install a release wheel")
    diagnosis = diagnose.cuda_error(message, arch) or diagnose.import_error(
        message, observed.get("torch"), observed.get("torch_cuda"), observed.get("version"))
    return verdict(check, "fail", f"{stage} failed: {message.splitlines()[0] if message else '?'}{note}",
                   measured=measured, diagnosis=diagnosis)


def judge_arch(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "kernels.nunchaku_arch"
    skip = not_nunchaku(observed)
    if skip:
        return verdict(check, "skip", skip)
    if not observed.get("package_ok"):
        return verdict(check, "skip", "no compiled nunchaku extension to inspect (see kernels.nunchaku_package)")
    arch = observed.get("arch")
    sass = list(observed.get("sass") or [])
    measured = {"arch": arch, "sass": sass, "ptx": observed.get("ptx") or []}
    if arch is None:
        return verdict(check, "skip", f"the GPU architecture is unknown here (compiled for {', '.join(sass) or '?'})",
                       measured=measured)
    if not sass:
        return verdict(check, "skip", f"no GPU targets readable in the extension ({observed.get('note', '')})",
                       measured=measured)
    number = arch_number(arch)
    if any(arch_number(t) == number for t in sass):
        return verdict(check, "pass", f"{arch} is among the compiled targets ({', '.join(sass)})"
                       f"{override_note(observed)}", measured=measured)
    return verdict(check, "fail", f"the wheel has no kernels for {arch} (compiled for {', '.join(sass)})",
                   measured=measured, diagnosis=diagnose.cuda_error("no kernel image is available", arch, sass))


def _gemm_preconditions(observed: Observed, path_skip: str | None) -> str | None:
    return path_skip or no_gpu_reason(observed) or (
        None if observed.get("cuda_ready") else "CUDA is not usable from torch (see gpu.torch)")


def gemm_failure(check: str, observed: Observed, measured: dict[str, Any]) -> CheckResult:
    message = str(observed["error"])
    diagnosis = diagnose.cuda_error(message, observed.get("arch"))
    if diagnosis is None and re.search(r"undefined symbol|No module named|cannot open shared object", message):
        diagnosis = diagnose.import_error(message, None, None, None)
    return verdict(check, "fail", f"the GEMM failed: {message.splitlines()[0]}", measured=measured,
                   diagnosis=diagnosis or "see the error; rerun with the same venv to reproduce")


def _judge_speed_and_error(check: str, observed: Observed, measured: dict[str, Any], bound: float,
                           min_speedup: float, label: str) -> CheckResult:
    thresholds = {"max_relative_error": bound, "min_speedup": min_speedup}
    error, speedup = float(observed["relative_error"]), float(observed["speedup"])
    if not observed.get("finite", True) or error != error or error > bound:
        return verdict(check, "fail", f"{label} result is wrong: relative error {error:.4f} > {bound}",
                       measured=measured, thresholds=thresholds,
                       diagnosis="the kernel computes garbage on this GPU: a broken or mismatched build; reinstall "
                       "the wheel that fits this torch and GPU")
    if speedup < min_speedup:
        return verdict(check, "fail", f"{label} is only {speedup:.2f}x BF16 (< {min_speedup}x)", measured=measured,
                       thresholds=thresholds,
                       diagnosis="the low-precision path is not faster than BF16 here: check GPU clocks and other "
                       "load, or lower checks.min_speedup if this GPU is known to be slower")
    return verdict(check, "pass", f"{label}: error {error:.4f} <= {bound}, {speedup:.2f}x BF16 (>= {min_speedup}x)",
                   measured=measured, thresholds=thresholds)


def judge_fp8(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "kernels.fp8_gemm"
    path = observed.get("path")
    path_skip = None
    if path != "fp8":
        path_skip = (f"nunchaku serves {observed.get('arch') or 'this GPU'}: the W4A4 GEMM is checked instead"
                     f"{override_note(observed)}"
                     if path == "nunchaku" else (observed.get("reason") or "no FP8 fallback for this GPU"))
    skip = _gemm_preconditions(observed, path_skip)
    if skip:
        return verdict(check, "skip", skip)
    if observed.get("error"):
        return gemm_failure(check, observed, {})
    if observed.get("unsupported"):
        return verdict(check, "fail", str(observed["unsupported"]),
                       diagnosis="the FP8 fallback needs torch >= 2.1 with float8 support: upgrade torch")
    keys = ("shape", "relative_error", "quantization_error", "fp8_ms", "bf16_ms", "fp8_tflops", "bf16_tflops",
            "speedup")
    measured = {k: observed.get(k) for k in keys}
    return _judge_speed_and_error(check, observed, measured, FP8_ERROR_BOUND, criteria.speedup_floor("fp8"),
                                  f"FP8 {observed.get('fp8_tflops')} TFLOP/s vs BF16 {observed.get('bf16_tflops')} "
                                  "TFLOP/s")
