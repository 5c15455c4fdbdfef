"""`provision check`'s smoke.workflow: a shipped workflow queued on a stand-in ComfyUI (real HTTP, its real
/prompt validation and error shapes, history and output files), over the local transport."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from provisioner.checks.model import CheckResult
from provisioner.checks.runner import run_checks
from provisioner.commands.check import plan_for_host
from provisioner.manifest import load_manifest
from provisioner.transport import LocalTransport
from tests.support.fake_comfyui import install_nunchaku_backend, make_fake_comfyui, nunchaku_plugin_source

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "manifests" / "workflows"
FLUX = "svdq-int4_r32-flux.1-dev.safetensors"
QWEN = "svdq-int4_r128-qwen-image-edit-2509-lightningv2.0-4steps.safetensors"
FLUX_FILES = {"diffusion_models": [FLUX], "text_encoders": ["clip_l.safetensors", "awq-int4-flux.1-t5xxl.safetensors"],
              "vae": ["ae.safetensors"]}
QWEN_FILES = {"diffusion_models": [QWEN], "text_encoders": ["qwen_2.5_vl_7b_fp8_scaled.safetensors"],
              "vae": ["qwen_image_vae.safetensors"]}


def nunchaku_venv(tmp_path: Path) -> Path:
    """A real venv (this Python, its packages) with the stand-in nunchaku 1.0.0 backend, so the stand-in
    ComfyUI-nunchaku registers its loaders with their real INPUT_TYPES."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install_nunchaku_backend(next(venv.glob("lib/python3*/site-packages")), "1.0.0")
    return venv


def setup(tmp_path: Path, workflow: str, files: dict[str, list[str]], models: list[dict[str, Any]],
          edit: Any = None, settings: dict[str, Any] | None = None) -> Path:
    """An sm_89 manifest in nunchaku mode (declared; ComfyUI itself runs with --cpu on this GPU-less machine),
    a stand-in ComfyUI holding `files`, and the shipped `workflow` (changed by `edit`) beside the manifest."""
    make_fake_comfyui(tmp_path / "root" / "ComfyUI", plugins={"ComfyUI-nunchaku": nunchaku_plugin_source()},
                      models=files, startup_seconds=1)
    flow = json.loads((WORKFLOWS / workflow).read_text(encoding="utf-8"))
    if edit is not None:
        edit(flow)
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / workflow).write_text(json.dumps(flow), encoding="utf-8")
    plugin: dict[str, Any] = {"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku"}
    if settings:
        plugin["settings"] = settings
    data = {
        "name": "workflow",
        "target": {"connection": "local", "root": str(tmp_path / "root")},
        "gpu": {"arch": "sm_89"},
        "python": {"adopt": str(nunchaku_venv(tmp_path))},
        "comfyui": {"repo": "https://github.com/comfyanonymous/ComfyUI", "ref": "v0.7.0", "plugins": [plugin]},
        "models": models,
        "service": {"extra_args": ["--cpu"]},
        "checks": {"workflow": f"workflows/{workflow}"},
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run(manifest: Path) -> CheckResult:
    loaded = load_manifest(manifest)
    transport = LocalTransport()
    plan = plan_for_host(loaded, transport, ["smoke"])
    results = {r.id: r for r in run_checks(transport, plan, loaded.manifest.target.python, timeout=120)}
    return results["smoke.workflow"]


FLUX_MODELS = [{"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-{precision}_r32-flux.1-dev.safetensors"}]
QWEN_MODELS = [{"repo": "nunchaku-tech/nunchaku-qwen-image-edit-2509",
                "file": "svdq-{precision}_r{rank}-qwen-image-edit-2509-lightningv2.0-4steps.safetensors", "rank": 128}]


def test_the_shipped_flux_workflow_runs_and_reports_its_timings_and_image(tmp_path: Path) -> None:
    result = run(setup(tmp_path, "flux.1-dev.json", FLUX_FILES, FLUX_MODELS))
    assert result.status == "pass", (result.summary, result.diagnosis)
    measured = result.measured
    assert measured["steps"] == 20 and measured["iterations"] == 20
    assert measured["seconds_per_step_from"] == "sampler progress" and measured["seconds_per_step"] > 0
    assert measured["seconds"] > 0 and measured["vram_device"] == "cpu" and measured["peak_vram_mib"] is None
    # A cold run that loads the models, then the warm one (a new seed, so ComfyUI's cache cannot answer it).
    assert measured["runs"] == 2 and measured["seconds_cold"] > 0
    folder = tmp_path / "root" / "ComfyUI" / "output" / "provision-check"
    assert measured["outputs"] == [str(folder / "flux.1-dev_00001_.png"), str(folder / "flux.1-dev_00002_.png")]
    for image in measured["outputs"]:
        assert Path(image).read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and image in result.summary
    assert "s/step over 20 steps" in result.summary and "first run, loading the models" in result.summary


def test_a_node_no_plugin_registered_is_named_with_the_plugin_that_provides_it(tmp_path: Path) -> None:
    def unknown_loader(flow: dict[str, Any]) -> None:
        flow["46"]["class_type"] = "NunchakuZImageDiTLoader"  # needs nunchaku >= 1.1.0; this venv has 1.0.0

    result = run(setup(tmp_path, "flux.1-dev.json", FLUX_FILES, FLUX_MODELS, edit=unknown_loader))
    assert result.status == "fail"
    assert "Cannot execute because node NunchakuZImageDiTLoader does not exist" in result.summary
    assert result.diagnosis and "ComfyUI-nunchaku (from v1.1.0)" in result.diagnosis


def test_a_model_file_nothing_installs_names_the_folder_to_add_it_to(tmp_path: Path) -> None:
    long_clip = "Long-ViT-L-14-GmP-SAE-TE-only.safetensors"

    def other_clip(flow: dict[str, Any]) -> None:
        flow["47"]["inputs"]["text_encoder1"] = long_clip

    result = run(setup(tmp_path, "flux.1-dev.json", FLUX_FILES, FLUX_MODELS, edit=other_clip))
    assert result.status == "fail"
    assert f"node 47 (NunchakuTextEncoderLoaderV2): model file {long_clip!r} is not in models/text_encoders" \
        in result.summary
    assert result.diagnosis and f"no entry in the manifest's models installs {long_clip}" in result.diagnosis
    assert "folder: text_encoders" in result.diagnosis


def test_the_diffusion_model_listed_in_the_manifest_but_absent_points_to_apply(tmp_path: Path) -> None:
    result = run(setup(tmp_path, "flux.1-dev.json", {**FLUX_FILES, "diffusion_models": []}, FLUX_MODELS))
    assert result.status == "fail" and f"model file {FLUX!r} is not in models/diffusion_models" in result.summary
    assert result.diagnosis and "models[0]" in result.diagnosis and "provision apply" in result.diagnosis


def without_cpu_offload(flow: dict[str, Any]) -> None:
    del flow["37"]["inputs"]["cpu_offload"]


def test_a_missing_required_cpu_offload_is_diagnosed_and_the_resolution_writes_it(tmp_path: Path) -> None:
    # Declared arch, no GPU seen: the resolver cannot choose cpu_offload from the GPU's memory.
    result = run(setup(tmp_path / "a", "qwen-image-edit-2509-lightning-4steps.json", QWEN_FILES, QWEN_MODELS,
                       edit=without_cpu_offload))
    assert result.status == "fail"
    assert "node 37 (NunchakuQwenImageDiTLoader) lacks the required input cpu_offload" in result.summary
    assert result.diagnosis and "comfyui.plugins[].settings.cpu_offload" in result.diagnosis
    assert "auto, enable, disable" in result.diagnosis
    # With the setting in the manifest, the workflow sent carries it and runs.
    fixed = run(setup(tmp_path / "b", "qwen-image-edit-2509-lightning-4steps.json", QWEN_FILES, QWEN_MODELS,
                      edit=without_cpu_offload, settings={"cpu_offload": "enable"}))
    assert fixed.status == "pass", (fixed.summary, fixed.diagnosis)
    assert {"node": "37", "class_type": "NunchakuQwenImageDiTLoader", "input": "cpu_offload", "value": "enable",
            "why": "set by comfyui.plugins[0].settings.cpu_offload"} in fixed.measured["written"]
    assert fixed.measured["steps"] == 4


def test_a_damaged_model_file_fails_the_run_with_its_execution_error(tmp_path: Path) -> None:
    manifest = setup(tmp_path, "flux.1-dev.json", FLUX_FILES, FLUX_MODELS)
    (tmp_path / "root" / "ComfyUI" / "models" / "vae" / "ae.safetensors").write_bytes(b"damaged download")
    result = run(manifest)
    assert result.status == "fail"
    assert "node 45 (VAELoader) failed: safetensors_rust.SafetensorError: Error while deserializing header" \
        in result.summary
    assert result.diagnosis and "damaged or incomplete" in result.diagnosis
