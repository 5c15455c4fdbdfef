"""`provision check` against a stand-in ComfyUI and real venvs, over the local transport."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.checks.model import CheckResult
from provisioner.checks.request import plan_checks
from provisioner.checks.runner import run_checks
from provisioner.manifest import load_manifest
from provisioner.transport import LocalTransport
from tests.support.fake_comfyui import make_fake_comfyui, plugin_source

REPO = Path(__file__).resolve().parents[2]
NODES = ["NunchakuFluxDiTLoader", "NunchakuQwenImageDiTLoader"]
FLUX = "svdq-int4_r32-flux.1-dev.safetensors"


def write_manifest(tmp_path: Path, venv: str = sys.prefix, **checks: Any) -> Path:
    data: dict[str, Any] = {
        "name": "smoke",
        "target": {"connection": "local", "root": str(tmp_path / "root")},
        "gpu": {"arch": "auto", "allow_cpu": True},
        "python": {"adopt": venv},
        "nunchaku": {"enabled": False},
        "comfyui": {"repo": "https://github.com/comfyanonymous/ComfyUI", "ref": "v0.3.64",
                    "plugins": [{"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku"}]},
        "models": [{"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-{precision}_r32-flux.1-dev.safetensors",
                    "folder": "diffusion_models"}],
        "checks": {"nodes": NODES, **checks},
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def comfy(tmp_path: Path, plugin: str, models: list[str] | None = None) -> Path:
    return make_fake_comfyui(tmp_path / "root" / "ComfyUI", plugins={"ComfyUI-nunchaku": plugin},
                             models={"diffusion_models": [FLUX] if models is None else models})


def run(manifest: Path, only: list[str] | None = None) -> dict[str, CheckResult]:
    loaded = load_manifest(manifest)
    plan = plan_checks(loaded.manifest, loaded.directory, only)
    results = run_checks(LocalTransport(), plan, loaded.manifest.target.python, timeout=240)
    return {r.id: r for r in results}


def assert_stopped(results: dict[str, CheckResult]) -> None:
    pid = results["smoke.server"].measured.get("pid")
    assert isinstance(pid, int)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_smoke_passes_with_nodes_models_and_a_workflow(tmp_path: Path) -> None:
    comfy(tmp_path, plugin_source(NODES))
    workflow = {"1": {"class_type": "KSampler", "inputs": {"steps": 4}}}
    (tmp_path / "flow.json").write_text(json.dumps(workflow), encoding="utf-8")
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
    comfy(tmp_path, plugin_source(NODES))
    manifest = write_manifest(tmp_path)
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

    comfy(tmp_path, plugin_source(NODES[:1]))
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
