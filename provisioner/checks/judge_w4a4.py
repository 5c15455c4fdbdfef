"""Verdict for kernels.w4a4_gemm: nunchaku's SVDQW4A4Linear on grid-exact data, per architecture.

A wrong result fails everywhere. Speed is judged where INT4/FP4 runs on tensor cores; where ptxas emulates
INT4 (Hopper, reached only through the unsupported-arch source-build override) a correct result passes and
the speed is reported as it is.
"""

from __future__ import annotations

from typing import Any

from provisioner.checks.criteria import Criteria
from provisioner.checks.judge_gpu import Observed, no_gpu_reason, verdict
from provisioner.checks.judge_kernels import gemm_failure, not_nunchaku, override_note
from provisioner.checks.model import CheckResult

CHECK = "kernels.w4a4_gemm"


def shape_label(shape: dict[str, Any]) -> str:
    return f"{shape.get('tokens')}x{shape.get('in_features')}->{shape.get('out_features')}"


def _wrong(row: dict[str, Any], bound: float) -> bool:
    error = float(row.get("relative_error", float("nan")))
    return not row.get("finite", False) or error != error or error > bound


def _speed_words(speedup: float) -> str:
    if speedup <= 0:
        return "speed not measured"
    if speedup >= 1:
        return f"{speedup:.2f}× faster than BF16"
    return f"{1 / speedup:.1f}× slower than BF16"


def judge_w4a4(observed: Observed, criteria: Criteria) -> CheckResult:
    skip = not_nunchaku(observed) or no_gpu_reason(observed) or (
        None if observed.get("cuda_ready") else "CUDA is not usable from torch (see gpu.torch)")
    if skip:
        return verdict(CHECK, "skip", skip)
    if observed.get("error"):
        return gemm_failure(CHECK, observed, {})
    if not observed.get("package_ok"):
        return verdict(CHECK, "skip", "nunchaku does not import (see kernels.nunchaku_import)")
    if not observed.get("first_op_ok", True):
        return verdict(CHECK, "skip", "nunchaku's first op did not run (see kernels.nunchaku_import)")
    if observed.get("unsupported"):
        return verdict(CHECK, "skip", str(observed["unsupported"]))
    rows = [r for r in observed.get("shapes") or [] if isinstance(r, dict)]
    if not rows:
        return verdict(CHECK, "fail", "the W4A4 check returned no measurements",
                       diagnosis="the host program is out of date or failed silently: rerun the check")
    precision = str(observed.get("precision") or "int4")
    rules = criteria.w4a4
    pairs = [(r, rules.error_bound(precision, int(r.get("shape", {}).get("in_features", 0)))) for r in rows]
    emulated = bool(observed.get("emulated"))
    floor = None if emulated else rules.speed_floor(observed.get("arch"), criteria.min_speedup)
    thresholds: dict[str, Any] = {
        "max_relative_error": {shape_label(r.get("shape", {})): b for r, b in pairs},
        "min_speedup": floor if floor is not None else "reported only (emulated INT4)",
    }
    measured = {"precision": precision, "emulated": emulated, "override": bool(observed.get("override")),
                "arch": observed.get("arch"), "layer": observed.get("layer"), "shapes": rows}
    label = "NVFP4" if precision == "fp4" else "INT4"
    note = override_note(observed)
    wrong = [(r, b) for r, b in pairs if _wrong(r, b)]
    if wrong:
        row, bound = wrong[0]
        error = float(row.get("relative_error", float("nan")))
        what = "non-finite output (NaN/Inf)" if not row.get("finite", False) else \
            f"relative error {error:.4f} > {bound}"
        prefix = "emulated INT4" if emulated else f"W4A4 {label}"
        return verdict(CHECK, "fail", f"{prefix}: wrong result at {shape_label(row.get('shape', {}))}: {what}{note}",
                       measured=measured, thresholds=thresholds, diagnosis=_wrong_diagnosis(observed, emulated))
    worst_error, worst_bound = max(((float(r["relative_error"]), b) for r, b in pairs),
                                   key=lambda pair: pair[0] / pair[1])
    slowest = min(rows, key=lambda r: float(r.get("speedup", 0.0)))
    speedup = float(slowest.get("speedup", 0.0))
    rates = (f"W4A4 {slowest.get('w4a4_tops')} TOPS vs BF16 {slowest.get('bf16_tflops')} TFLOP/s at "
             f"{shape_label(slowest.get('shape', {}))}")
    correct = f"correct (error {worst_error:.4f} <= {worst_bound})"
    if emulated:
        return verdict(CHECK, "pass", f"emulated INT4 on {observed.get('arch')}: {correct}, {_speed_words(speedup)} "
                       f"({rates}){note}", measured=measured, thresholds=thresholds)
    assert floor is not None
    if speedup < floor:
        return verdict(CHECK, "fail", f"W4A4 {label}: {correct}, but only {speedup:.2f}× BF16 (< {floor}×; {rates})"
                       f"{note}", measured=measured, thresholds=thresholds,
                       diagnosis="the 4-bit path is not faster than BF16 here: check GPU clocks and other load, or "
                       "lower checks.min_speedup if this GPU is known to be slower")
    return verdict(CHECK, "pass", f"W4A4 {label}: {correct}, {speedup:.2f}× BF16 (>= {floor}×; {rates}){note}",
                   measured=measured, thresholds=thresholds)


def _wrong_diagnosis(observed: Observed, emulated: bool) -> str:
    arch = observed.get("arch") or "this GPU"
    if emulated:
        return (f"the unsupported-arch build computes wrong results on {arch}: the override is for diagnostics "
                "only; rebuild from the release tag, and report it upstream with this output if it persists")
    return (f"nunchaku's layer computes garbage on {arch}: a broken or mismatched build (wrong torch/CUDA, or a "
            "source build for another arch); reinstall the wheel that fits this torch and GPU")
