"""`provision check` against a stand-in ComfyUI and real venvs, over the local transport."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.checks.host_smoke import smoke_argv
from provisioner.checks.model import CheckResult
from provisioner.checks.runner import run_checks
from provisioner.commands.check import plan_for_host
from provisioner.engine import HostSession
from provisioner.manifest import load_manifest
from provisioner.transport import LocalTransport
from tests.support.fake_comfyui import (
    install_nunchaku_backend,
    make_fake_comfyui,
    nunchaku_plugin_source,
    plugin_source,
)

REPO = Path(__file__).resolve().parents[2]
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version").exists()
NODES = ["NunchakuFluxDiTLoader", "NunchakuQwenImageDiTLoader"]
FLUX = "svdq-int4_r32-flux.1-dev.safetensors"


def write_manifest(tmp_path: Path, venv: str = sys.prefix, **checks: Any) -> Path:
    """An RTX 4090 (sm_89) manifest: nunchaku mode, resolved as declared on this GPU-less machine, whose
    service runs ComfyUI with --cpu (there is no NVIDIA driver here)."""
    data: dict[str, Any] = {
        "name": "smoke",
        "target": {"connection": "local", "root": str(tmp_path / "root")},
        "gpu": {"arch": "sm_89"},
        "python": {"adopt": venv},
        "comfyui": {"repo": "https://github.com/comfyanonymous/ComfyUI", "ref": "v0.3.64",
                    "plugins": [{"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku"}]},
        "models": [{"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-{precision}_r32-flux.1-dev.safetensors",
                    "folder": "diffusion_models"}],
        "service": {"extra_args": ["--cpu"]},
        "checks": {"nodes": NODES, **checks},
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def edit_manifest(path: Path, **fields: Any) -> Path:
    data = yaml.safe_load(path.read_text())
    data.update(fields)
    path.write_text(yaml.safe_dump(data))
    return path


def comfy(tmp_path: Path, plugin: str, models: list[str] | None = None, **standin: Any) -> Path:
    return make_fake_comfyui(tmp_path / "root" / "ComfyUI", plugins={"ComfyUI-nunchaku": plugin},
                             models={"diffusion_models": [FLUX] if models is None else models}, **standin)


def run(manifest: Path, only: list[str] | None = None) -> dict[str, CheckResult]:
    """What `provision check` does: resolve against the host's facts, then run and judge the checks."""
    loaded = load_manifest(manifest)
    transport = LocalTransport()
    plan = plan_for_host(loaded, transport, only)
    results = run_checks(transport, plan, loaded.manifest.target.python, timeout=240)
    return {r.id: r for r in results}


def assert_stopped(results: dict[str, CheckResult]) -> None:
    pid = results["smoke.server"].measured.get("pid")
    assert isinstance(pid, int)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_smoke_passes_with_nodes_models_and_a_workflow(tmp_path: Path) -> None:
    make_fake_comfyui(tmp_path / "root" / "ComfyUI", plugins={"ComfyUI-nunchaku": plugin_source(NODES)},
                      models={"diffusion_models": [FLUX, FLUX.replace("dev", "schnell")],
                              "text_encoders": ["clip_l.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors"],
                              "vae": ["ae.safetensors"]})
    shutil.copy(REPO / "manifests" / "workflows" / "flux.1-schnell.json", tmp_path / "flow.json")
    results = run(write_manifest(tmp_path, workflow="flow.json"), only=["smoke"])
    assert {r.status for r in results.values()} == {"pass"}, {k: r.summary for k, r in results.items()}
    assert results["smoke.workflow"].measured["seconds_per_iteration"] is not None
    assert results["smoke.workflow"].measured["iterations"] == 4
    assert_stopped(results)


def test_plugin_that_fails_to_import_is_diagnosed(tmp_path: Path) -> None:
    comfy(tmp_path, plugin_source([], fail_with='ModuleNotFoundError("No module named \'nunchaku\'")'))
    results = run(write_manifest(tmp_path), only=["smoke"])
    plugins = results["smoke.plugins"]
    assert plugins.status == "fail"
    assert "ComfyUI-nunchaku" in plugins.summary
    assert plugins.diagnosis and "nunchaku is not installed in this venv" in plugins.diagnosis
    nodes = results["smoke.nodes"]
    assert nodes.status == "fail" and all(n in nodes.summary for n in NODES)
    assert nodes.diagnosis and "ComfyUI-nunchaku failed to import" in nodes.diagnosis
    assert results["smoke.server"].status == "pass"
    assert_stopped(results)


def test_missing_node_and_model_fail_by_name(tmp_path: Path) -> None:
    comfy(tmp_path, plugin_source(NODES[:1]), models=[])
    results = run(write_manifest(tmp_path), only=["smoke"])
    assert results["smoke.nodes"].status == "fail"
    assert results["smoke.nodes"].summary == f"missing node(s): {NODES[1]}"
    assert results["smoke.models"].status == "fail"
    assert "diffusion_models/svdq-{precision}_r32-flux.1-dev.safetensors" in results["smoke.models"].summary
    assert results["smoke.plugins"].status == "pass"


def test_comfyui_missing_on_the_host_fails(tmp_path: Path) -> None:
    results = run(write_manifest(tmp_path), only=["smoke"])
    assert results["smoke.server"].status == "fail"
    assert "provision apply" in (results["smoke.server"].diagnosis or "")
    assert results["smoke.nodes"].status == "skip"


def impostor_venv(tmp_path: Path) -> Path:
    """A real venv holding PyPI's unrelated 'nunchaku' 0.16.1 (its metadata and modules, no _C extension)."""
    venv = tmp_path / "impostor-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "nunchaku").mkdir()
    (site / "nunchaku" / "__init__.py").write_text("from .nunchaku import Nunchaku\n")
    (site / "nunchaku" / "nunchaku.py").write_text("class Nunchaku:\n    pass\n")
    info = site / "nunchaku-0.16.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nunchaku\nVersion: 0.16.1\nSummary: Optimally "
                                   "partitioning data into piece-wise linear segments.\nAuthor: Yu Huo\n")
    (info / "RECORD").write_text(
        "nunchaku/__init__.py,,\nnunchaku/nunchaku.py,,\nnunchaku-0.16.1.dist-info/METADATA,,\n")
    return venv


def test_wrong_nunchaku_package_is_named(tmp_path: Path) -> None:
    venv = impostor_venv(tmp_path)
    manifest = write_manifest(tmp_path, venv=str(venv))
    data = yaml.safe_load(manifest.read_text())
    data["gpu"]["arch"] = "sm_86"
    data["nunchaku"] = {"enabled": True}
    manifest.write_text(yaml.safe_dump(data))
    results = run(manifest, only=["kernels"])
    package = results["kernels.nunchaku_package"]
    assert package.status == "fail", package
    assert "PyPI package 'nunchaku' 0.16.1" in package.summary
    assert package.diagnosis and package.diagnosis.startswith("wrong package: `pip uninstall nunchaku`")
    assert results["kernels.nunchaku_import"].status == "skip"


def provision(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    from provisioner.cli import cli

    prefix = [sys.executable, "-m", "provisioner", "check"] if "check" in cli.commands else [
        sys.executable, "-c", "import sys; from provisioner.commands.check import check; check()"]
    return subprocess.run([*prefix, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_cli_exit_codes_and_reports(tmp_path: Path) -> None:
    # About the command line, not ComfyUI's start-up: a quicker stand-in, and no nunchaku to check here.
    comfy(tmp_path, plugin_source(NODES), startup_seconds=1)
    manifest = write_manifest(tmp_path, kernels=False)
    junit = tmp_path / "out" / "report.xml"
    ok = provision(str(manifest), "--json", "--junit", str(junit), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["exit_code"] == 0 and report["counts"]["fail"] == 0
    statuses = {r["id"]: r["status"] for r in report["results"]}
    assert statuses["smoke.nodes"] == "pass"
    assert statuses["gpu.bf16_gemm"] == "skip"  # no GPU here: skipped with a reason, not failed
    suites = ET.parse(junit).getroot()
    assert {s.get("name") for s in suites} == {"gpu", "kernels", "smoke"}

    comfy(tmp_path, plugin_source(NODES[:1]), startup_seconds=1)
    failed = provision(str(manifest), "--only", "smoke", cwd=tmp_path)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert f"missing node(s): {NODES[1]}" in failed.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nchecks: {nodez: []}\n")
    error = provision(str(broken), cwd=tmp_path)
    assert error.returncode == 1 and "nodez" in error.stderr
    unknown_group = provision(str(manifest), "--only", "gpus", cwd=tmp_path)
    assert unknown_group.returncode == 1 and "unknown check group" in unknown_group.stderr


def test_h100_manifest_skips_cleanly_without_a_gpu(tmp_path: Path) -> None:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this machine has an NVIDIA GPU")
    result = provision(str(REPO / "manifests" / "h100.yaml"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {r["status"] for r in report["results"]} == {"skip"}
    fp8 = next(r for r in report["results"] if r["id"] == "kernels.fp8_gemm")
    assert "no NVIDIA GPU" in fp8["summary"]


def test_missing_venv_falls_back_to_the_host_python_and_says_so(tmp_path: Path) -> None:
    comfy(tmp_path, plugin_source(NODES))
    results = run(write_manifest(tmp_path, venv=str(tmp_path / "no-such-venv")), only=["gpu", "smoke"])
    server = results["smoke.server"]
    assert server.status == "fail" and "no-such-venv/bin/python does not exist" in server.summary
    if not Path("/dev/nvidiactl").exists():
        assert results["gpu.torch"].status == "skip" and "does not exist" in results["gpu.torch"].summary


def service_argv_of(manifest: Path) -> list[str]:
    """The service resource's argv as plan expands it from the comfyui-nunchaku role."""
    session = HostSession(load_manifest(manifest))
    session.plan()
    return next(r.spec["argv"] for r in session.expansion.resources if r.kind == "service")


@pytest.mark.skipif(NVIDIA_DRIVER, reason="this machine has an NVIDIA driver: it would not resolve to CPU mode")
def test_smoke_runs_exactly_the_services_command_line(tmp_path: Path) -> None:
    # CPU mode (no GPU, gpu.allow_cpu): real ComfyUI needs --cpu, and the service and the check both pass it.
    comfy(tmp_path, nunchaku_plugin_source(), models=[])
    manifest = edit_manifest(write_manifest(tmp_path), gpu={"arch": "auto", "allow_cpu": True}, models=[],
                             service={"listen": "0.0.0.0", "port": 8188}, checks={"nodes": ["KSampler"]},
                             roles=["comfyui-nunchaku"])
    service = service_argv_of(manifest)
    assert "--cpu" in service
    results = run(manifest, only=["smoke"])
    server = results["smoke.server"]
    assert server.status == "pass", server
    ran = server.measured["argv"]
    port = int(ran[ran.index("--port") + 1])
    assert ran == smoke_argv(service, str(tmp_path / "root"), port)
    assert [a for a in ran if a not in ("127.0.0.1", str(port))] == [
        a for a in service if a not in ("0.0.0.0", "8188")]
    assert server.measured["seconds"] >= 15  # the stand-in takes as long as real ComfyUI
    # nunchaku is not used here: the plugin's nodes that need it failed, and that is information only.
    plugins = results["smoke.plugins"]
    assert plugins.status == "pass", plugins
    assert "NunchakuFluxDiTLoader" in plugins.summary and "information" in plugins.summary
    assert_stopped(results)


@pytest.mark.skipif(NVIDIA_DRIVER, reason="this machine has an NVIDIA driver")
def test_comfyui_without_cpu_on_a_host_without_a_driver_dies_in_the_check_as_in_the_service(tmp_path: Path) -> None:
    comfy(tmp_path, nunchaku_plugin_source())
    manifest = edit_manifest(write_manifest(tmp_path), service={})  # sm_89 declared, no --cpu, no driver here
    results = run(manifest, only=["smoke"])
    server = results["smoke.server"]
    assert server.status == "fail", server
    assert server.summary.startswith("ComfyUI exited with status 1 during startup: RuntimeError: Found no NVIDIA "
                                     "driver on your system.")
    assert "--cpu" not in server.measured["argv"]
    assert server.diagnosis and "CPU mode" in server.diagnosis
    plugins = results["smoke.plugins"]
    assert plugins.status == "skip" and "before it imported custom nodes" in plugins.summary
    assert results["smoke.nodes"].status == "skip"


def backend_venv(tmp_path: Path, version: str) -> Path:
    """A real venv holding a stand-in nunchaku backend of `version` (the modules the plugin imports)."""
    venv = tmp_path / "backend-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install_nunchaku_backend(next(venv.glob("lib/python3*/site-packages")), version)
    return venv


def test_only_needed_nodes_are_judged_and_comfy_extras_failures_are_comfyuis_own(tmp_path: Path) -> None:
    # Plugin v1.2.1 on backend 1.0.1: FLUX loads; Z-Image (needs convert_fp16, 1.2.0), PuLID and IPAdapter do not.
    comfy(tmp_path, nunchaku_plugin_source(), extras_missing=["kornia"])
    venv = backend_venv(tmp_path, "1.0.1+torch2.8")
    results = run(write_manifest(tmp_path, venv=str(venv), nodes=["NunchakuFluxDiTLoader"]), only=["smoke"])
    plugins = results["smoke.plugins"]
    assert plugins.status == "pass", plugins
    info = plugins.measured["information"]
    assert ("ComfyUI's own comfy_extras/nodes_canny.py did not import (it needs kornia, which is not installed); "
            "only its nodes are missing") in info
    assert any("NunchakuZImageDiTLoader" in line and "NunchakuPulidApply" in line for line in info)
    assert results["smoke.nodes"].status == "pass"  # checks.nodes, the FLUX model's loader and its set's loaders
    assert results["smoke.nodes"].thresholds == {"nodes": ["NunchakuFluxDiTLoader", "DualCLIPLoader", "VAELoader"]}


def test_needed_node_without_nunchaku_gets_the_install_fix(tmp_path: Path) -> None:
    comfy(tmp_path, nunchaku_plugin_source(), extras_missing=["kornia"])  # no nunchaku in this venv
    results = run(write_manifest(tmp_path, nodes=["NunchakuFluxDiTLoader"]), only=["smoke"])
    wheel = "nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl"
    for check in ("smoke.plugins", "smoke.nodes"):
        result = results[check]
        assert result.status == "fail", result
        assert result.diagnosis and result.diagnosis.endswith(
            f"nunchaku is not installed in this venv: install {wheel} (`provision apply` does)")
        assert "kornia" not in result.diagnosis
