"""The shipped workflows as the smoke check sends them: the host's loader settings and model files written in
from the resolution, and not queued where the host cannot run them."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from provisioner.catalog import load_catalog
from provisioner.checks.criteria import Criteria
from provisioner.checks.host_smoke import VramSampler
from provisioner.checks.judge_workflow import judge_workflow
from provisioner.checks.request import plan_checks
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.resolve import render_resolution, resolve

REPO = Path(__file__).resolve().parents[2]
FACTS = Path(__file__).resolve().parent / "facts"
GPU_MANIFESTS = ["rtx3090", "rtx4090", "rtx5090", "a100", "t4"]


def sent(manifest: str, facts: str, **update: Any) -> dict[str, Any]:
    loaded = load_manifest(REPO / "manifests" / f"{manifest}.yaml")
    model = loaded.manifest.model_copy(update=update)
    result = resolve(model, load_facts(FACTS / f"{facts}.json"), load_catalog())
    assert result.ok, render_resolution(result)
    plan = plan_checks(model, REPO / "manifests", only=["smoke"], resolution=result)
    smoke: dict[str, Any] = plan.request["smoke"]
    return smoke


def loader(workflow: dict[str, Any]) -> dict[str, Any]:
    [node] = [n for n in workflow.values() if n["class_type"].endswith("DiTLoader")]
    inputs: dict[str, Any] = node["inputs"]
    return inputs


@pytest.mark.parametrize("manifest", GPU_MANIFESTS)
def test_every_gpu_manifest_queues_its_shipped_api_workflow(manifest: str) -> None:
    smoke = sent(manifest, manifest)
    workflow = smoke["workflow"]
    assert smoke["workflow_skipped"] is None and isinstance(workflow, dict) and "nodes" not in workflow
    assert {n["class_type"] for n in workflow.values()} >= {"KSampler", "VAEDecode", "SaveImage"}
    # The diffusion model the workflow loads is the file the manifest installs for this GPU.
    installed = {m["file"] for m in smoke["models"]}
    assert any(v in {f.replace("{precision}", p).replace("{rank}", r) for f in installed for p in ("int4", "fp4")
                     for r in ("32", "128")} for v in loader(workflow).values() if isinstance(v, str))


def test_turing_gets_float16_and_nunchaku_fp16_attention() -> None:
    smoke = sent("t4", "t4")
    inputs = loader(smoke["workflow"])
    assert inputs["data_type"] == "float16" and inputs["attention"] == "nunchaku-fp16"
    shipped = loader(json.loads((REPO / "manifests" / "workflows" / "flux.1-schnell.json").read_text()))
    assert shipped["data_type"] == "bfloat16" and shipped["attention"] == "flash-attention2"
    assert {w["input"] for w in smoke["workflow_written"]} >= {"data_type", "attention"}


def test_blackwell_loads_the_fp4_file_and_device_id_follows_gpu_index() -> None:
    loaded = load_manifest(REPO / "manifests" / "rtx5090.yaml").manifest
    inputs = loader(sent("rtx5090", "rtx5090", gpu=loaded.gpu.model_copy(update={"index": 0}))["workflow"])
    assert inputs["model_path"] == "svdq-fp4_r32-flux.1-dev.safetensors" and inputs["device_id"] == 0


def test_cpu_offload_follows_the_gpu_memory() -> None:
    inputs = loader(sent("rtx3090", "rtx3090")["workflow"])
    assert inputs["cpu_offload"] == "disable"  # 24 GiB: at or above the loader's 15 GiB 'auto' threshold


def test_cpu_mode_does_not_queue_the_workflow_and_says_why() -> None:
    loaded = load_manifest(REPO / "manifests" / "rtx4090.yaml").manifest
    smoke = sent("rtx4090", "nogpu", gpu=loaded.gpu.model_copy(update={"arch": "auto", "allow_cpu": True}))
    assert smoke["workflow"] is None and "CPU mode" in smoke["workflow_skipped"]
    verdict = judge_workflow({"configured": True, "ready": True, "skipped": smoke["workflow_skipped"]}, Criteria())
    assert verdict.status == "skip" and "CPU mode: there is no NVIDIA GPU" in verdict.summary


def test_peak_vram_is_sampled_from_system_stats_while_the_run_goes() -> None:
    """ComfyUI's /system_stats on a GPU (model_management.get_free_memory/get_total_memory): the sampler keeps
    the highest torch-allocated (torch_vram_total - torch_vram_free) and whole-device use it saw."""
    mib = 1024 * 1024
    # (torch reserved, torch reserved but free, device free) per answer: idle, mid-run, after the run.
    answers = iter([(0, 0, 23000), (9000, 1000, 13500), (8500, 3000, 14000)])

    class Stats(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            reserved, free, device_free = next(answers)
            body = json.dumps({"system": {}, "devices": [{
                "name": "cuda:0 NVIDIA GeForce RTX 3090 : cudaMallocAsync", "type": "cuda", "index": 0,
                "vram_total": 24576 * mib, "vram_free": device_free * mib,
                "torch_vram_total": reserved * mib, "torch_vram_free": free * mib}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sampler = VramSampler(f"http://127.0.0.1:{server.server_address[1]}")
        for _ in range(3):
            sampler.sample()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert sampler.report() == {"vram_device": "cuda", "peak_vram_mib": 8000, "peak_device_vram_mib": 11076,
                                "device_vram_before_mib": 1576}
    measured = judge_workflow({"configured": True, "ready": True, "name": "w.json", "seconds": 4.2, "steps": 4,
                               "status": {"status_str": "success", "completed": True, "messages": []},
                               "outputs": ["/opt/comfy/ComfyUI/output/a_00001_.png"], **sampler.report()},
                              Criteria())
    assert measured.status == "pass" and "1.05 s/step over 4 steps" in measured.summary
    assert "peak VRAM 8000 MiB torch-allocated (11076 MiB device)" in measured.summary
    assert measured.measured["seconds_per_step_from"] == "run seconds / sampler steps"
