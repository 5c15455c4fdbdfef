"""kernels.w4a4_gemm and kernels.nunchaku_import judged on host-program outputs, the thresholds per arch,
and the unsupported-arch override that takes the nunchaku path on Hopper."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provisioner.catalog import load_catalog
from provisioner.checks.criteria import Criteria, w4a4_rules
from provisioner.checks.host_kernels import KernelState
from provisioner.checks.model import CheckResult
from provisioner.checks.request import CheckPlan, plan_checks
from provisioner.checks.runner import _judge_events
from provisioner.manifest import load_manifest
from provisioner.transport.base import RunResult

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = Path(__file__).resolve().parent / "kernel_outputs"
RULES = w4a4_rules(load_catalog())


def judged(name: str, criteria: Criteria | None = None) -> CheckResult:
    """The verdict on one recorded host-program output, through the runner's own event handling."""
    events = json.loads((OUTPUTS / f"{name}.json").read_text())["events"]
    plan = CheckPlan(request={}, criteria=criteria or Criteria(), groups=["kernels"])
    [result] = [r for r in _judge_events(plan, events, RunResult(0, "", "")) if r.id == events[1]["id"]]
    return result


def test_error_bound_follows_the_kernels_accumulation() -> None:
    # INT4 accumulates K/64 groups in bf16: 3 x 0.00166 x sqrt(1 + 48/2) at K=3072.
    assert RULES.error_bound("int4", 3072) == 0.0249
    assert RULES.error_bound("int4", 12288) == 0.049
    # NVFP4 accumulates in fp32: only the output rounding is left.
    assert RULES.error_bound("fp4", 3072) == 0.005
    # Far below what a wrong layout gives (~1.4 on these data), far above what the model predicts (0.0084).
    assert 0.0084 * 2.5 < RULES.error_bound("int4", 3072) < 0.1


@pytest.mark.parametrize("name, arch", [("native_sm86_good", "sm_86"), ("native_sm89_good", "sm_89")])
def test_native_int4_passes_on_error_and_speed(name: str, arch: str) -> None:
    result = judged(name)
    assert result.status == "pass", result
    assert result.summary.startswith("W4A4 INT4: correct (error 0.0084 <= 0.0249), ")
    assert result.thresholds["min_speedup"] == 1.3
    assert result.thresholds["max_relative_error"] == {"4096x3072->3072": 0.0249, "4096x3072->12288": 0.0249}
    assert result.measured["arch"] == arch and len(result.measured["shapes"]) == 2
    assert "emulated" not in result.summary and "override" not in result.summary


def test_native_int4_slower_than_its_floor_fails_and_the_manifest_floor_wins() -> None:
    slow = judged("native_sm89_slow")
    assert slow.status == "fail" and "only 1.05× BF16 (< 1.3×" in slow.summary
    assert slow.diagnosis and "clocks" in slow.diagnosis
    assert judged("native_sm89_slow", Criteria(min_speedup=1.0)).status == "pass"


def test_hopper_emulated_int4_is_correct_and_slow_not_broken() -> None:
    result = judged("hopper_emulated_correct_slow")
    assert result.status == "pass", result
    assert result.summary.startswith("emulated INT4 on sm_90: correct (error 0.0084 <= 0.0249), 17.9× slower than BF16")
    assert "unsupported-arch build override" in result.summary
    assert result.thresholds["min_speedup"] == "reported only (emulated INT4)"
    # A manifest speed floor (manifests/h100.yaml sets 1.2 for FP8) does not turn emulation into a failure.
    assert judged("hopper_emulated_correct_slow", Criteria(min_speedup=1.2)).status == "pass"
    assert "broken" not in result.summary


def test_a_wrong_result_fails_everywhere() -> None:
    wrong = judged("hopper_emulated_wrong")
    assert wrong.status == "fail"
    assert "emulated INT4: wrong result at 4096x3072->3072: relative error 1.4127 > 0.0249" in wrong.summary
    assert wrong.diagnosis and "unsupported-arch build computes wrong results on sm_90" in wrong.diagnosis
    nan = judged("nan_output")
    assert nan.status == "fail" and "non-finite output (NaN/Inf)" in nan.summary
    assert nan.diagnosis and "broken or mismatched build" in nan.diagnosis


def test_nunchaku_without_the_layer_is_skipped_naming_its_version() -> None:
    result = judged("old_nunchaku_no_layer")
    assert result.status == "skip"
    assert result.summary.startswith("nunchaku 0.3.1+torch2.7 has no nunchaku.models.linear")
    assert "needs nunchaku >= 1.0.0" in result.summary


def test_fp4_uses_the_fp32_accumulation_bound() -> None:
    result = judged("fp4_sm120_good")
    assert result.status == "pass", result
    assert result.summary.startswith("W4A4 NVFP4: correct (error 0.0017 <= 0.005), ")


def test_no_kernel_image_at_the_first_op_names_the_wheels_arches() -> None:
    result = judged("import_no_kernel_image")
    assert result.status == "fail"
    assert "first op (quantize_w4a4_act_fuse_lora) fails on sm_90: no kernel image" in result.summary
    assert result.diagnosis and result.diagnosis.startswith(
        "the wheel lacks sm_90's SASS (it has SASS for sm_75, sm_80, sm_86, sm_89, sm_120, sm_121 and no PTX)")
    assert "unsupported-arch build override" in result.summary


def test_first_op_crash_is_told_apart_from_an_import_failure() -> None:
    result = judged("import_first_op_crash")
    assert result.status == "fail"
    assert "its first op (quantize_w4a4_act_fuse_lora) killed the process with SIGSEGV" in result.summary
    assert result.diagnosis and "libstdc++ statically" in result.diagnosis and "/usr/bin/g++" in result.diagnosis
    assert "no kernel image" not in result.diagnosis


def test_a_check_skipped_after_a_failed_first_op() -> None:
    observed: dict[str, Any] = {"gpu_present": True, "cuda_ready": True, "path": "nunchaku", "arch": "sm_90",
                                "package_ok": True, "first_op_ok": False}
    from provisioner.checks.judge import judge

    result = judge("kernels.w4a4_gemm", observed, Criteria())
    assert result.status == "skip" and "first op did not run" in result.summary


# --- the request and the kernel path -------------------------------------------------------------


class ArchOnly:
    """What KernelState.path() reads of the host's GPU state: the arch torch reports."""

    def __init__(self, arch: str | None) -> None:
        self.arch = arch

    def device_arch(self) -> str | None:
        return self.arch


def h100_request(**nunchaku: Any) -> dict[str, Any]:
    manifest = load_manifest(REPO / "manifests" / "h100.yaml").manifest
    if nunchaku:
        manifest = manifest.model_copy(update={"nunchaku": manifest.nunchaku.model_validate(nunchaku)})
    return plan_checks(manifest, REPO / "manifests", only=["kernels"]).request


def test_hopper_takes_the_fp8_path_without_the_override() -> None:
    request = h100_request()
    assert request["nunchaku"]["unsupported_arch_override"] is False
    path = KernelState(request, ArchOnly("sm_90")).path()
    assert path["path"] == "fp8" and "emulated" not in path


@pytest.mark.parametrize("build", ["source", "auto"])
def test_the_override_takes_the_nunchaku_path_on_hopper_flagged_emulated(build: str) -> None:
    request = h100_request(build=build, build_options={"allow_unsupported_arch": True})
    assert request["nunchaku"]["unsupported_arch_override"] is True
    assert "sm_90" in request["nunchaku"]["emulated_int4"]
    path = KernelState(request, ArchOnly("sm_90")).path()
    assert path == {"path": "nunchaku", "arch": "sm_90", "precision": "int4", "emulated": True, "override": True,
                    "reason": request["nunchaku"]["emulated_int4"]["sm_90"]}
    assert "ptxas emulates" in path["reason"]
    # The override changes nothing where nunchaku is supported, or where INT4 is not emulated (FP8 on sm_100).
    assert KernelState(request, ArchOnly("sm_89")).path() == {"path": "nunchaku", "arch": "sm_89", "precision": "int4"}
    assert KernelState(request, ArchOnly("sm_100")).path()["path"] == "fp8"


def test_a_wheel_only_build_has_nothing_to_override() -> None:
    request = h100_request(build="wheel", build_options={"allow_unsupported_arch": True})
    assert request["nunchaku"]["unsupported_arch_override"] is False
    assert KernelState(request, ArchOnly("sm_90")).path()["path"] == "fp8"


def test_the_request_carries_the_flux_shapes() -> None:
    shapes = h100_request()["gemm"]["w4a4_shapes"]
    assert shapes == [[4096, 3072, 3072], [4096, 3072, 12288]]
    assert all(k % 128 == 0 and n % 128 == 0 for _tokens, k, n in shapes)


def test_every_kernel_verdict_of_an_override_build_says_so() -> None:
    from provisioner.checks.judge import judge

    base: dict[str, Any] = {"gpu_present": True, "cuda_ready": True, "path": "nunchaku", "arch": "sm_90",
                            "precision": "int4", "emulated": True, "override": True, "installed": True,
                            "version": "1.2.1+cu13.0torch2.11", "torch": "2.11.0+cu130", "torch_cuda": "13.0",
                            "extensions": ["/v/nunchaku/_C.so"], "package_ok": True, "extension_loaded": True,
                            "package_imported": True, "sass": ["sm_90"], "ptx": [],
                            "first_op": {"stage": "op", "ok": True, "op": "quantize_w4a4_act_fuse_lora"}}
    for check in ("kernels.nunchaku_package", "kernels.nunchaku_import", "kernels.nunchaku_arch", "kernels.fp8_gemm"):
        result = judge(check, base, Criteria())
        assert "unsupported-arch build override" in result.summary, result
    assert judge("kernels.nunchaku_import", base, Criteria()).summary.startswith(
        "nunchaku._C loads, its first op runs on sm_90, and nunchaku imports")
