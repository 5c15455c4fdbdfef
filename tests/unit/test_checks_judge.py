"""Judging check observations: thresholds, skips without a GPU, and diagnoses from real error messages."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from provisioner.checks import comfy_log, diagnose, host_fatbin
from provisioner.checks.criteria import Criteria, WantedModel
from provisioner.checks.judge import judge
from provisioner.checks.model import CheckReport, CheckResult
from provisioner.checks.report import render_junit, render_text
from provisioner.checks.request import CheckPlan
from provisioner.checks.runner import _judge_events
from provisioner.transport.base import RunResult

GPU = {"gpu_present": True, "venv_missing": False, "venv_python": "/opt/torch/.venv/bin/python"}
NO_GPU = {"gpu_present": False, "venv_missing": False}
FLOORS = {"sm_90": 55.0}
CRITERIA = Criteria(tflops_floor=lambda arch, name: FLOORS.get(arch),
                    wheel_for=lambda v, torch, cuda, py: f"nunchaku-1.0.1+torch{torch}-{py}-{py}-linux_x86_64.whl")

# Real messages, from nunchaku and ComfyUI-nunchaku issues (NK#410, CN#79, NK#876, CN#140, CN#86) and ComfyUI logs.
UNDEFINED_SYMBOL = ("ImportError: /home/u/.venv/lib/python3.12/site-packages/nunchaku/"
                    "_C.cpython-312-x86_64-linux-gnu.so: undefined symbol: "
                    "_ZN3c106detail23torchInternalAssertFailEPKcS2_jS2_RKSs")
MISSING_CUDART = "ImportError: libcudart.so.13: cannot open shared object file: No such file or directory"
NO_KERNEL_IMAGE = ("RuntimeError: CUDA error: no kernel image is available for execution on the device "
                   "(at /nunchaku/src/kernels/awq/gemv_awq.cu:318)")


def verdict(check: str, observed: dict[str, Any], criteria: Criteria = CRITERIA) -> CheckResult:
    return judge(check, observed, criteria)


@pytest.mark.parametrize("check", ["gpu.driver", "gpu.device", "gpu.cuda_compat", "gpu.bf16_gemm"])
def test_gpu_checks_skip_without_a_gpu(check: str) -> None:
    result = verdict(check, dict(NO_GPU))
    assert result.status == "skip" and "no NVIDIA GPU" in result.summary


def test_bf16_floor_from_manifest_wins_over_the_catalog() -> None:
    observed = dict(GPU, cuda_ready=True, tflops=250.0, ms=4.4, dtype="bfloat16", arch="sm_90", name="NVIDIA H100")
    assert verdict("gpu.bf16_gemm", observed).status == "pass"  # catalog floor 55
    strict = Criteria(min_bf16_tflops=300.0)
    result = verdict("gpu.bf16_gemm", observed, strict)
    assert result.status == "fail"
    assert result.thresholds == {"min_tflops": 300.0, "source": "checks.min_bf16_tflops"}
    assert result.diagnosis and "clocks" in result.diagnosis


def test_wrong_arch_and_torch_without_kernels_for_the_gpu() -> None:
    base = dict(GPU, cuda_ready=True, name="NVIDIA GeForce RTX 5090", arch="sm_120", capability=[12, 0])
    wrong = verdict("gpu.device", dict(base, expected_arch="sm_89", torch_arch_list=["sm_120"]))
    assert wrong.status == "fail" and "expects sm_89" in wrong.summary
    old_torch = verdict("gpu.device", dict(base, expected_arch="auto", torch_arch_list=["sm_80", "sm_86", "sm_90"]))
    assert old_torch.status == "fail" and "no kernels for sm_120" in old_torch.summary
    # sm_86 SASS runs on sm_89, and PTX of a lower arch JIT-compiles
    ada = dict(base, name="RTX 4090", arch="sm_89", expected_arch="sm_89")
    assert verdict("gpu.device", dict(ada, torch_arch_list=["sm_80", "sm_86"])).status == "pass"
    assert verdict("gpu.device", dict(base, expected_arch="auto", torch_arch_list=["compute_90"])).status == "pass"


def test_driver_too_old_for_torch_cuda_major() -> None:
    criteria = Criteria(driver_floor=lambda cuda: ">=580.65.06" if cuda == "13.0" else None)
    observed = dict(GPU, torch="2.9.0+cu130", torch_cuda="13.0", driver_cuda="12.8", driver_version="570.86")
    result = verdict("gpu.cuda_compat", observed, criteria)
    assert result.status == "fail"
    assert result.diagnosis == "upgrade the driver to >=580.65.06, or install a torch built for CUDA 12.8 or older"
    minor = verdict("gpu.cuda_compat", dict(observed, torch_cuda="12.9"))
    assert minor.status == "pass" and "minor-version" in minor.summary


def test_nvidia_smi_driver_library_mismatch() -> None:
    observed = dict(GPU, nvidia_smi_error="Failed to initialize NVML: Driver/library version mismatch\nNVML library "
                    "version: 580.95", gpus=[])
    result = verdict("gpu.driver", observed)
    assert result.status == "fail" and result.diagnosis and "reboot" in result.diagnosis


def test_venv_missing_fails_on_a_gpu_host_and_skips_without_one() -> None:
    missing = {"venv_missing": True, "venv_python": "/opt/torch/.venv/bin/python", "error": "venv missing"}
    assert verdict("gpu.torch", dict(missing, gpu_present=True)).status == "fail"
    assert verdict("gpu.torch", dict(missing, gpu_present=False)).status == "skip"


def test_cpu_only_torch_on_a_gpu_host() -> None:
    observed = dict(GPU, torch="2.9.0+cpu", cuda_build=None, cuda_available=False, device_count=0)
    result = verdict("gpu.torch", observed)
    assert result.status == "fail" and result.diagnosis and "CPU-only build" in result.diagnosis


PACKAGE = dict(GPU, path="nunchaku", arch="sm_89", installed=True, torch="2.9.1+cu128", torch_cuda="12.8",
               python_tag="cp312", location="/v/site-packages/nunchaku")


def test_impostor_nunchaku_is_named_with_the_fix() -> None:
    observed = dict(PACKAGE, version="0.16.1", summary=diagnose.IMPOSTOR_SUMMARY, extensions=[])
    result = verdict("kernels.nunchaku_package", observed)
    assert result.status == "fail" and "PyPI package 'nunchaku' 0.16.1" in result.summary
    assert result.diagnosis == ("wrong package: `pip uninstall nunchaku` (the PyPI project of that name is unrelated), "
                                "then install nunchaku-1.0.1+torch2.9-cp312-cp312-linux_x86_64.whl")


def test_real_package_must_match_torch() -> None:
    real = dict(PACKAGE, version="1.0.1+torch2.8", summary="SVDQuant", extensions=["/v/nunchaku/_C.so"])
    result = verdict("kernels.nunchaku_package", real)
    assert result.status == "fail" and "built for torch 2.8" in result.summary
    assert verdict("kernels.nunchaku_package", dict(real, version="1.0.1+torch2.9")).status == "pass"
    cuda = verdict("kernels.nunchaku_package", dict(real, version="1.2.1+cu13.0torch2.9"))
    assert cuda.status == "fail" and "CUDA 13.0" in cuda.summary
    unlabeled = verdict("kernels.nunchaku_package", dict(real, version="1.0.1"))
    assert unlabeled.status == "fail" and "label" in unlabeled.summary


def test_undefined_symbol_is_a_torch_abi_mismatch() -> None:
    observed = dict(PACKAGE, package_ok=True, version="1.0.1+torch2.8", extension_loaded=False, error=UNDEFINED_SYMBOL)
    result = verdict("kernels.nunchaku_import", observed)
    assert result.status == "fail"
    assert result.diagnosis and result.diagnosis.startswith("torch ABI mismatch: nunchaku 1.0.1+torch2.8 (built for "
                                                            "torch 2.8) was compiled against another torch")
    assert result.diagnosis.endswith("install nunchaku-1.0.1+torch2.9-cp312-cp312-linux_x86_64.whl")


def test_a_manifest_that_builds_nunchaku_names_apply_not_a_release_wheel() -> None:
    """On a source-build manifest no release wheel fits (that is why it builds): the fix is the apply."""
    fix = "run `provision apply` for this manifest: it builds nunchaku-1.2.1+cu13.0torch2.11-… from source"
    built = Criteria(wheel_for=CRITERIA.wheel_for, built_on_host=fix)
    missing = verdict("kernels.nunchaku_package", dict(PACKAGE, installed=False), built)
    assert missing.status == "fail" and missing.diagnosis == f"nunchaku is not installed in this venv; {fix}"
    abi = verdict("kernels.nunchaku_import", dict(PACKAGE, package_ok=True, version="1.2.1+cu13.0torch2.10",
                                                  extension_loaded=False, error=UNDEFINED_SYMBOL), built)
    assert abi.diagnosis and abi.diagnosis.startswith("torch ABI mismatch") and abi.diagnosis.endswith(fix)
    assert "releases" not in abi.diagnosis and ".whl" not in abi.diagnosis.replace(fix, "")


def test_missing_cuda_runtime_names_the_cuda_mismatch() -> None:
    text = diagnose.import_error(MISSING_CUDART, "2.9.1+cu128", "12.8", "1.1.0+torch2.9")
    assert "needs libcudart.so.13 (CUDA 13)" in text and "brings CUDA 12.8" in text


def test_no_kernel_image_names_the_arch_and_targets() -> None:
    observed = dict(PACKAGE, arch="sm_90", package_ok=True, sass=["sm_75", "sm_80", "sm_86", "sm_89", "sm_120"], ptx=[])
    result = verdict("kernels.nunchaku_arch", observed)
    assert result.status == "fail" and "no kernels for sm_90" in result.summary
    assert result.diagnosis and "compiled for: sm_75, sm_80" in result.diagnosis
    gemm = verdict("kernels.w4a4_gemm", dict(PACKAGE, cuda_ready=True, package_ok=True, error=NO_KERNEL_IMAGE))
    assert gemm.status == "fail" and gemm.diagnosis and "not compiled for this GPU's sm_89" in gemm.diagnosis


def gemm_observed(path: str, **values: Any) -> dict[str, Any]:
    return dict(GPU, path=path, arch="sm_90", cuda_ready=True, package_ok=True, finite=True, **values)


def test_fp8_speedup_and_error_thresholds() -> None:
    good = gemm_observed("fp8", relative_error=0.0017, speedup=1.87, fp8_tflops=1441.5, bf16_tflops=770.1)
    result = verdict("kernels.fp8_gemm", good)
    assert result.status == "pass" and result.thresholds == {"max_relative_error": 0.02, "min_speedup": 1.2}
    assert verdict("kernels.fp8_gemm", dict(good, speedup=1.1)).status == "fail"
    assert verdict("kernels.fp8_gemm", dict(good, relative_error=0.4)).status == "fail"
    assert verdict("kernels.fp8_gemm", dict(good, speedup=1.1), Criteria(min_speedup=1.05)).status == "pass"
    nan = verdict("kernels.fp8_gemm", dict(good, relative_error=float("nan")))
    assert nan.status == "fail"


def test_kernel_paths_skip_each_other() -> None:
    hopper = dict(GPU, path="fp8", arch="sm_90", reason="nunchaku cannot serve sm_90: no 4-bit tensor cores")
    assert "FP8 path is checked instead" in verdict("kernels.w4a4_gemm", hopper).summary
    ada = dict(GPU, path="nunchaku", arch="sm_89", cuda_ready=True)
    assert "W4A4 GEMM is checked instead" in verdict("kernels.fp8_gemm", ada).summary
    fp8_no_gpu = dict(NO_GPU, path="fp8", arch="sm_90")
    assert verdict("kernels.fp8_gemm", fp8_no_gpu).summary.startswith("no NVIDIA GPU")


# A ComfyUI log as ComfyUI and ComfyUI-nunchaku print it (issues CN#540, CN#804, NK#272).
COMFY_LOG = """\
======================================== ComfyUI-nunchaku Initialization ========================================
Nunchaku version: 0.16.1
ComfyUI-nunchaku version: 1.2.1
ComfyUI-nunchaku 1.2.1 requires nunchaku >= v1.0.0, but found nunchaku 0.16.1. Please update nunchaku.
Node `NunchakuFluxDiTLoader` import failed:
Traceback (most recent call last):
  File "/workspace/ComfyUI/custom_nodes/ComfyUI-nunchaku/__init__.py", line 82, in <module>
    from .nodes.models.flux import NunchakuFluxDiTLoader
ImportError: cannot import name 'NunchakuFluxTransformer2dModel' from 'nunchaku'
Traceback (most recent call last):
  File "/root/ComfyUI/nodes.py", line 2141, in load_custom_node
ModuleNotFoundError: No module named 'insightface'

Cannot import /root/ComfyUI/custom_nodes/ComfyUI-PuLID module for custom nodes: No module named 'insightface'

Import times for custom nodes:
   0.0 seconds: /root/ComfyUI/custom_nodes/websocket_image_save.py
\x1b[33m   0.1 seconds (IMPORT FAILED): /root/ComfyUI/custom_nodes/ComfyUI-PuLID\x1b[0m
"""


def test_comfy_log_parsing() -> None:
    failures = comfy_log.plugin_failures(COMFY_LOG)
    assert [(f.plugin, f.error) for f in failures] == [("ComfyUI-PuLID", "No module named 'insightface'")]
    assert comfy_log.node_failures(COMFY_LOG) == {
        "NunchakuFluxDiTLoader": "ImportError: cannot import name 'NunchakuFluxTransformer2dModel' from 'nunchaku'"}
    assert comfy_log.version_complaints(COMFY_LOG) == [
        "requires nunchaku >= v1.0.0, but found nunchaku 0.16.1"]
    several = "Nodes `NunchakuPulidApply`,`NunchakuPulidLoader` and `NunchakuFluxPuLIDApplyV2` import failed:\n" \
              "Traceback (most recent call last):\n  File \"x.py\"\nModuleNotFoundError: No module named 'facexlib'\n"
    assert set(comfy_log.node_failures(several)) == {"NunchakuPulidApply", "NunchakuPulidLoader",
                                                      "NunchakuFluxPuLIDApplyV2"}
    # Where the plugin's own logging.basicConfig wins over ComfyUI's, its format carries a prefix.
    prefixed = "2026-12-01 10:00:00,123 - ERROR - Node `NunchakuFluxDiTLoader` import failed:\n" \
               "Traceback (most recent call last):\n  File \"x.py\"\nModuleNotFoundError: No module named 'nunchaku'\n"
    assert comfy_log.node_failures(prefixed) == {
        "NunchakuFluxDiTLoader": "ModuleNotFoundError: No module named 'nunchaku'"}


def test_plugins_and_nodes_verdicts_from_the_log() -> None:
    plugins = verdict("smoke.plugins", {"started": True, "log": COMFY_LOG, "plugins": ["ComfyUI-PuLID"]})
    assert plugins.status == "fail" and "ComfyUI-PuLID" in plugins.summary
    assert plugins.diagnosis and "pip install insightface" in plugins.diagnosis
    # A plugin the manifest does not list is someone else's: information, not a failure.
    other = verdict("smoke.plugins", {"started": True, "log": COMFY_LOG, "plugins": ["ComfyUI-nunchaku"]})
    assert other.status == "pass" and "ComfyUI-PuLID (not in this manifest) did not import" in other.summary
    nodes = verdict("smoke.nodes", {"ready": True, "wanted": ["NunchakuFluxDiTLoader"],
                                    "missing": ["NunchakuFluxDiTLoader"], "log": COMFY_LOG})
    assert nodes.status == "fail" and nodes.diagnosis
    assert "cannot import name 'NunchakuFluxTransformer2dModel'" in nodes.diagnosis


def test_model_placeholders_match_listed_files() -> None:
    model = WantedModel("diffusion_models", "svdq-{precision}_r{rank}-qwen-image.safetensors")
    assert model.pattern().fullmatch("svdq-fp4_r128-qwen-image.safetensors")
    assert not model.pattern().fullmatch("svdq-int8_r128-qwen-image.safetensors")
    criteria = Criteria(models=[model])
    listed = {"ready": True, "listings": {"diffusion_models": ["svdq-int4_r32-qwen-image.safetensors"]}}
    assert verdict("smoke.models", listed, criteria).status == "pass"
    assert verdict("smoke.models", {"ready": True, "listings": {"diffusion_models": []}}, criteria).status == "fail"


def fatbin_entry(kind: int, arch: int, payload: bytes) -> bytes:
    header = struct.pack("<HHIQIIHHI", kind, 0x0101, 64, len(payload), 0, 0, 0, 0, arch).ljust(64, b"\0")
    return header + payload


def test_fatbin_targets() -> None:
    entries = fatbin_entry(2, 80, b"\0" * 32) + fatbin_entry(2, 89, b"\0" * 16) + fatbin_entry(1, 120, b"\0" * 8)
    container = struct.pack("<IHHQ", host_fatbin.FATBIN_MAGIC, 1, 16, len(entries)) + entries
    assert host_fatbin.targets(b"\0" * 8 + container + container) == {"sass": ["sm_80", "sm_89"], "ptx": ["sm_120"]}


def test_program_crash_is_an_error_for_the_running_and_remaining_checks() -> None:
    plan = CheckPlan(request={}, criteria=CRITERIA, groups=["gpu"])
    events = [{"event": "start", "id": "gpu.driver"},
              {"event": "check", "id": "gpu.driver", "observed": dict(NO_GPU), "seconds": 0.1},
              {"event": "start", "id": "gpu.torch"}]
    results = {r.id: r for r in _judge_events(plan, events, RunResult(-11, "", "Segmentation fault"))}
    assert results["gpu.driver"].status == "skip"
    assert results["gpu.torch"].status == "error" and "while running this check" in results["gpu.torch"].summary
    assert results["gpu.bf16_gemm"].summary.startswith("not run: the check program exited -11")
    report = CheckReport(manifest="m.yaml", host="local", python="py", results=list(results.values()))
    assert report.exit_code() == 1


def test_reports_and_exit_codes() -> None:
    results = [CheckResult(id="gpu.bf16_gemm", status="pass", summary="799.5 TFLOP/s", measured={"tflops": 799.5}),
               CheckResult(id="kernels.fp8_gemm", status="fail", summary="slow", diagnosis="check clocks"),
               CheckResult(id="smoke.server", status="skip", summary="disabled")]
    report = CheckReport(manifest="m.yaml", host="local", python="py", results=results)
    assert report.exit_code() == 2
    assert CheckReport(manifest="m", host="h", python="p", results=[results[0], results[2]]).exit_code() == 0
    text = render_text(report)
    assert "FAIL kernels.fp8_gemm" in text and "-> check clocks" in text
    root = ET.fromstring(render_junit(report))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    fp8_case, server_case = cases["kernels.fp8_gemm"], cases["smoke.server"]
    assert fp8_case.find("failure") is not None
    assert server_case.find("skipped") is not None


# ComfyUI 0.3.64 and ComfyUI-nunchaku v1.2.1 as they log (formats from nodes.py and the plugin's __init__.py):
# ComfyUI's own comfy_extras fail first, then the plugin's per-node failures, then ComfyUI's summaries.
EXTRAS_TRACE = """\
Traceback (most recent call last):
  File "/root/ComfyUI/nodes.py", line 2131, in load_custom_node
    module_spec.loader.exec_module(module)
  File "/root/ComfyUI/comfy_extras/nodes_canny.py", line 1, in <module>
    from kornia.filters import canny
ModuleNotFoundError: No module named 'kornia'

Cannot import /root/ComfyUI/comfy_extras/nodes_canny.py module for custom nodes: No module named 'kornia'
"""
EXTRAS_SUMMARY = """\
WARNING: some comfy_extras/ nodes did not import correctly. This may be because they are missing some dependencies.

IMPORT FAILED: nodes_canny.py

This issue might be caused by new missing dependencies added the last time you updated ComfyUI.
Please do a: pip install -r requirements.txt

Starting server

To see the GUI go to: http://127.0.0.1:8188
"""


def nunchaku_failure(header: str, error: str, statement: str = "from nunchaku import X") -> str:
    return (f"{header}\nTraceback (most recent call last):\n"
            f'  File "/root/ComfyUI/custom_nodes/ComfyUI-nunchaku/__init__.py", line 82, in <module>\n'
            f"    {statement}\n{error}\n")


def comfy_startup(*plugin_lines: str, version: str = "1.0.1") -> str:
    return (EXTRAS_TRACE + "=" * 40 + " ComfyUI-nunchaku Initialization " + "=" * 40 + "\n"
            f"Nunchaku version: {version}\nComfyUI-nunchaku version: 1.2.1\n" + "".join(plugin_lines)
            + "=" * 113 + "\n\nImport times for custom nodes:\n"
            "   0.9 seconds: /root/ComfyUI/custom_nodes/ComfyUI-nunchaku\n\n" + EXTRAS_SUMMARY)


NO_NUNCHAKU = "ModuleNotFoundError: No module named 'nunchaku'"
ZIMAGE = nunchaku_failure("Nodes `NunchakuZImageDiTLoader` import failed:",
                          "ImportError: cannot import name 'convert_fp16' from 'nunchaku.models.transformers.utils'")
PULID = nunchaku_failure("Nodes `NunchakuPulidApply`,`NunchakuPulidLoader`, `NunchakuPuLIDLoaderV2` and "
                         "`NunchakuFluxPuLIDApplyV2` import failed:", "ModuleNotFoundError: No module named 'facexlib'")
NEEDS = {"plugins": ["ComfyUI-nunchaku"], "needed": ["NunchakuFluxDiTLoader"]}
WHEEL = "nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl"
NUNCHAKU_MODE = Criteria(mode="nunchaku", nunchaku_wheel=WHEEL)


def test_comfy_extras_failures_are_comfyuis_own_and_do_not_hide_the_nunchaku_diagnosis() -> None:
    log = comfy_startup(nunchaku_failure("Node `NunchakuFluxDiTLoader` import failed:", NO_NUNCHAKU),
                        version="Package 'nunchaku' not found.")
    assert comfy_log.plugin_failures(log) == []
    assert comfy_log.builtin_failures(log) == [
        comfy_log.BuiltinFailure("comfy_extras", "nodes_canny.py", "No module named 'kornia'")]
    plugins = verdict("smoke.plugins", dict(NEEDS, started=True, log=log, exited=None), NUNCHAKU_MODE)
    assert plugins.status == "fail", plugins
    assert plugins.summary == "needed plugin node(s) failed to import: NunchakuFluxDiTLoader"
    assert plugins.diagnosis == (f"NunchakuFluxDiTLoader: {NO_NUNCHAKU} -> nunchaku is not installed in this venv: "
                                 f"install {WHEEL} (`provision apply` does)")
    assert "nodes_canny" not in plugins.diagnosis and "dependency of nunchaku" not in plugins.diagnosis
    assert plugins.measured["information"] == [
        "ComfyUI's own comfy_extras/nodes_canny.py did not import (it needs kornia, which is not installed); "
        "only its nodes are missing"]
    nodes = verdict("smoke.nodes", {"ready": True, "wanted": ["NunchakuFluxDiTLoader"], "plugins": NEEDS["plugins"],
                                    "missing": ["NunchakuFluxDiTLoader"], "log": log}, NUNCHAKU_MODE)
    assert nodes.status == "fail" and nodes.diagnosis
    assert nodes.diagnosis.endswith("nunchaku is not installed in this venv: "
                                    f"install {WHEEL} (`provision apply` does)")
    assert "kornia" not in nodes.diagnosis


def test_only_the_nodes_the_manifest_needs_are_judged() -> None:
    # Plugin v1.2.1 on backend 1.0.1 (the resolver's A100 pick): FLUX loads, Z-Image and PuLID do not.
    log = comfy_startup(PULID, ZIMAGE)
    plugins = verdict("smoke.plugins", dict(NEEDS, started=True, log=log, exited=None), NUNCHAKU_MODE)
    assert plugins.status == "pass", plugins
    assert plugins.summary.startswith("the 1 needed node(s) imported; information: ")
    assert ("node(s) this manifest does not need did not import: NunchakuFluxPuLIDApplyV2, NunchakuPuLIDLoaderV2, "
            "NunchakuPulidApply, NunchakuPulidLoader, NunchakuZImageDiTLoader") in plugins.summary
    needs_zimage = dict(NEEDS, needed=["NunchakuFluxDiTLoader", "NunchakuZImageDiTLoader"])
    failed = verdict("smoke.plugins", dict(needs_zimage, started=True, log=log, exited=None), NUNCHAKU_MODE)
    assert failed.status == "fail" and failed.summary.endswith("failed to import: NunchakuZImageDiTLoader")
    assert failed.diagnosis and ("the installed nunchaku lacks nunchaku.models.transformers.utils.convert_fp16: it "
                                 "is older than this plugin release needs") in failed.diagnosis


DIED_WITHOUT_CPU = """\
Traceback (most recent call last):
  File "/root/ComfyUI/main.py", line 149, in <module>
    import execution
  File "/root/ComfyUI/comfy/model_management.py", line 237, in <module>
    total_vram = get_total_memory(get_torch_device()) / (1024 * 1024)
  File "/root/venv/lib/python3.12/site-packages/torch/cuda/__init__.py", line 410, in _lazy_init
    torch._C._cuda_init()
RuntimeError: Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a \
driver from http://www.nvidia.com/Download/index.aspx
"""


def test_plugins_are_not_ok_when_comfyui_died_before_loading_them() -> None:
    plugins = verdict("smoke.plugins", dict(NEEDS, started=True, log=DIED_WITHOUT_CPU, exited=1))
    assert plugins.status == "skip"
    assert plugins.summary == ("ComfyUI exited with status 1 before it imported custom nodes (see smoke.server): "
                               "the plugins were not checked")
    server = verdict("smoke.server", {"mode": "started", "exited": 1, "log": DIED_WITHOUT_CPU, "seconds": 4.1})
    assert server.status == "fail" and "Found no NVIDIA driver" in server.summary
    assert server.diagnosis and "CPU mode" in server.diagnosis
    # Killed while a plugin was being imported (a crash in a compiled extension): that is the plugin's doing.
    crashed = EXTRAS_TRACE + "=" * 40 + " ComfyUI-nunchaku Initialization " + "=" * 40 + "\nNunchaku version: 1.2.1\n"
    during = verdict("smoke.plugins", dict(NEEDS, started=True, log=crashed, exited=-11))
    assert during.status == "fail" and "while importing custom nodes" in during.summary


def test_cpu_mode_says_nunchaku_is_not_used_here() -> None:
    log = comfy_startup(nunchaku_failure("Node `NunchakuFluxDiTLoader` import failed:", NO_NUNCHAKU))
    observed = {"ready": True, "wanted": ["NunchakuFluxDiTLoader"], "missing": ["NunchakuFluxDiTLoader"], "log": log,
                "plugins": ["ComfyUI-nunchaku"]}
    nodes = verdict("smoke.nodes", observed, Criteria(mode="cpu"))
    assert nodes.status == "fail" and nodes.diagnosis
    assert "nunchaku is not used on this host (CPU mode: there is no NVIDIA GPU to run it)" in nodes.diagnosis


def test_pypi_nunchaku_is_named_with_the_fix() -> None:
    complaint = ("ComfyUI-nunchaku 1.2.1 requires nunchaku >= v1.0.0, but found nunchaku 0.16.1. "
                 "Please update nunchaku.\n")
    log = comfy_startup(complaint, nunchaku_failure("Node `NunchakuFluxDiTLoader` import failed:",
                                                    "ModuleNotFoundError: No module named 'nunchaku._C'"),
                        version="0.16.1")
    plugins = verdict("smoke.plugins", dict(NEEDS, started=True, log=log, exited=None), NUNCHAKU_MODE)
    assert plugins.status == "fail" and plugins.diagnosis
    assert ("the installed `nunchaku` is not nunchaku's engine (requires nunchaku >= v1.0.0, but found nunchaku "
            "0.16.1): PyPI's unrelated package of that name") in plugins.diagnosis
    assert f"`pip uninstall nunchaku`, then install {WHEEL}" in plugins.diagnosis
    assert "PyPI's unrelated package" in diagnose.import_error("No module named 'nunchaku._C'", None, None, None)
