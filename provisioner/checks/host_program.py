"""On-host check program: runs the requested checks and writes one JSON line per check.

It runs under the target venv's interpreter (Python >= 3.8, stdlib; torch only where present), shipped
with its sibling `host_*` modules on stdin. Verdicts are not made here: each check reports what it
observed, and the controller judges it against thresholds.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import host_gpu, host_kernels, host_smoke


class ResultStream:
    """JSON lines on the original stdout; everything else printed (also by C code) goes to stderr."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._out = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)

    def write(self, event: str, **fields: Any) -> None:
        fields["event"] = event
        self._out.write(json.dumps(fields, default=str) + "\n")
        self._out.flush()


def _checks() -> list[tuple[str, str, Callable[[Any], dict[str, Any]]]]:
    return [
        ("gpu", "gpu.driver", host_gpu.check_driver),
        ("gpu", "gpu.torch", host_gpu.check_torch),
        ("gpu", "gpu.device", host_gpu.check_device),
        ("gpu", "gpu.cuda_compat", host_gpu.check_cuda_compat),
        ("gpu", "gpu.bf16_gemm", host_gpu.check_bf16_gemm),
        ("kernels", "kernels.nunchaku_package", host_kernels.check_package),
        ("kernels", "kernels.nunchaku_import", host_kernels.check_import),
        ("kernels", "kernels.nunchaku_arch", host_kernels.check_arch),
        ("kernels", "kernels.w4a4_gemm", host_kernels.check_w4a4_gemm),
        ("kernels", "kernels.fp8_gemm", host_kernels.check_fp8_gemm),
        ("smoke", "smoke.server", host_smoke.check_server),
        ("smoke", "smoke.plugins", host_smoke.check_plugins),
        ("smoke", "smoke.nodes", host_smoke.check_nodes),
        ("smoke", "smoke.models", host_smoke.check_models),
        ("smoke", "smoke.workflow", host_smoke.check_workflow),
    ]


class Context:
    """What the checks share: the request, the GPU state found so far, the ComfyUI process."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.gpu = host_gpu.GpuState(request)
        self.kernels = host_kernels.KernelState(request, self.gpu)
        self.smoke = host_smoke.SmokeState(request)


def run(request: dict[str, Any]) -> int:
    # Before torch is imported: CUDA reads these once, when it initialises. The smoke test's ComfyUI
    # inherits them, so it sees the service's GPU exactly as the service does.
    os.environ.update({str(k): str(v) for k, v in (request.get("gpu", {}).get("env") or {}).items()})
    stream = ResultStream()
    groups = set(request.get("groups") or [])
    ctx = Context(request)
    try:
        for group, check_id, func in _checks():
            if group not in groups:
                continue
            stream.write("start", id=check_id)
            started = time.time()
            try:
                observed = func(ctx)
            except Exception as exc:  # the failure is the observation: the judge diagnoses the message
                observed = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
            stream.write("check", id=check_id, observed=observed, seconds=round(time.time() - started, 3))
    finally:
        ctx.smoke.stop()
    stream.write("done")
    return 0
