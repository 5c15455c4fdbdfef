"""Turns what the host observed into verdicts: pass / fail / skip, with thresholds and a diagnosis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from provisioner.checks import judge_gpu, judge_kernels, judge_smoke, judge_w4a4, judge_workflow
from provisioner.checks.criteria import Criteria
from provisioner.checks.model import CheckResult

Judge = Callable[[dict[str, Any], Criteria], CheckResult]

JUDGES: dict[str, Judge] = {
    "gpu.driver": judge_gpu.judge_driver,
    "gpu.torch": judge_gpu.judge_torch,
    "gpu.device": judge_gpu.judge_device,
    "gpu.cuda_compat": judge_gpu.judge_cuda_compat,
    "gpu.bf16_gemm": judge_gpu.judge_bf16_gemm,
    "kernels.nunchaku_package": judge_kernels.judge_package,
    "kernels.nunchaku_import": judge_kernels.judge_import,
    "kernels.nunchaku_arch": judge_kernels.judge_arch,
    "kernels.w4a4_gemm": judge_w4a4.judge_w4a4,
    "kernels.fp8_gemm": judge_kernels.judge_fp8,
    "smoke.server": judge_smoke.judge_server,
    "smoke.plugins": judge_smoke.judge_plugins,
    "smoke.nodes": judge_smoke.judge_nodes,
    "smoke.models": judge_smoke.judge_models,
    "smoke.workflow": judge_workflow.judge_workflow,
}

CHECK_IDS = list(JUDGES)
GROUPS = ("gpu", "kernels", "smoke")


def judge(check_id: str, observed: dict[str, Any], criteria: Criteria, seconds: float | None = None) -> CheckResult:
    """The verdict for one check; an unexpected exception on the host is a failure with its message."""
    if "traceback" in observed and set(observed) <= {"error", "traceback"}:
        message = str(observed["error"])
        result = judge_gpu.verdict(check_id, "fail", f"the check raised {message.splitlines()[0]}",
                                   diagnosis=_raised_diagnosis(message), measured={"traceback": observed["traceback"]})
    else:
        result = JUDGES[check_id](observed, criteria)
    return result.model_copy(update={"seconds": seconds})


def _raised_diagnosis(message: str) -> str:
    from provisioner.checks import diagnose

    return diagnose.cuda_error(message, None) or "the check program hit an unexpected error: see the traceback"


def skipped(check_id: str, reason: str) -> CheckResult:
    return judge_gpu.verdict(check_id, "skip", reason)


def errored(check_id: str, reason: str) -> CheckResult:
    return judge_gpu.verdict(check_id, "error", reason)
