"""The ready manifests in manifests/ resolve on the GPUs they are written for, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.catalog import load_catalog
from provisioner.checks.request import plan_checks
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.resolve import render_resolution, resolve

REPO = Path(__file__).resolve().parents[2]
FACTS = Path(__file__).resolve().parent / "facts"


@pytest.mark.parametrize(
    ("manifest", "facts", "precision", "wheel_part", "model_part"),
    [
        ("rtx3090", "rtx3090", "int4", "+cu12.8torch2.10-cp312",
         "svdq-int4_r128-qwen-image-edit-2509-lightningv2.0-4steps"),
        ("rtx4090", "rtx4090", "int4", "+cu13.0torch2.10-cp312", "svdq-int4_r32-flux.1-dev"),
        ("rtx5090", "rtx5090", "fp4", "+cu12.8torch2.10-cp312", "svdq-fp4_r32-flux.1-dev"),
        ("a100", "a100", "int4", "1.0.1+torch2.6-cp312", "svdq-int4_r32-flux.1-schnell"),
        ("t4", "t4", "int4", "+cu12.8torch2.10-cp312", "svdq-int4_r32-flux.1-schnell"),
    ],
)
def test_gpu_manifests_resolve_on_their_gpu(manifest: str, facts: str, precision: str, wheel_part: str,
                                            model_part: str) -> None:
    loaded = load_manifest(REPO / "manifests" / f"{manifest}.yaml")
    result = resolve(loaded.manifest, load_facts(FACTS / f"{facts}.json"), load_catalog())
    assert result.ok, render_resolution(result)
    assert result.mode == "nunchaku" and result.gpu is not None and result.gpu.precision == precision
    assert result.nunchaku is not None and wheel_part in result.nunchaku.filename
    assert result.nunchaku.urls[0].startswith("https://github.com/")
    assert any(model_part in m.filename for m in result.models)
    assert result.plugin is not None and result.plugin.ref.startswith("v")


def test_t4_runs_in_float16() -> None:
    loaded = load_manifest(REPO / "manifests" / "t4.yaml")
    result = resolve(loaded.manifest, load_facts(FACTS / "t4.json"), load_catalog())
    assert result.gpu is not None and result.gpu.dtype == "float16"


def test_gpu_manifest_on_hopper_is_refused_with_the_fp8_fallback_named() -> None:
    loaded = load_manifest(REPO / "manifests" / "rtx4090.yaml")
    manifest = loaded.manifest.model_copy(update={"gpu": loaded.manifest.gpu.model_copy(update={"arch": "auto"})})
    result = resolve(manifest, load_facts(FACTS / "h100.json"), load_catalog())
    assert not result.ok
    text = render_resolution(result)
    assert "sm_90" in text and "precision: auto" in text


def test_h100_manifest_falls_back_to_fp8() -> None:
    loaded = load_manifest(REPO / "manifests" / "h100.yaml")
    flux = load_manifest(REPO / "manifests" / "rtx4090.yaml").manifest.models
    # The fixture's driver (570) is older than the GPU machine's (580), so let the CUDA build follow it.
    cuda = loaded.manifest.cuda.model_copy(update={"version": "auto"})
    manifest = loaded.manifest.model_copy(update={"models": flux, "cuda": cuda})
    result = resolve(manifest, load_facts(FACTS / "h100.json"), load_catalog())
    assert result.ok, render_resolution(result)
    assert result.mode == "plain" and result.nunchaku is None and result.fallback
    assert all(m.fallback for m in result.models)


def test_shipped_manifests_name_the_newest_repository_urls() -> None:
    texts = {path.name: path.read_text() for path in sorted((REPO / "manifests").rglob("*.yaml"))}
    for name, text in texts.items():
        assert "github.com/nunchaku-tech/" not in text and "github.com/mit-han-lab/" not in text, name
        assert "github.com/comfyanonymous/" not in text, name
    assert "https://github.com/nunchaku-ai/ComfyUI-nunchaku" in texts["comfyui-nunchaku.yaml"]
    assert "https://github.com/Comfy-Org/ComfyUI" in texts["comfyui-nunchaku.yaml"]


def test_the_gpu_machine_manifest_keeps_the_torch_of_the_venv_it_adopts() -> None:
    """h200.json is the GPU machine's own facts: /opt/torch/.venv holds PyPI's torch 2.11.0 (no local label,
    CUDA 13.0 by its nvidia-cuda-runtime); adopting it must not swap it for the catalog's 2.10."""
    loaded = load_manifest(REPO / "manifests" / "h100.yaml")
    result = resolve(loaded.manifest, load_facts(FACTS / "h200.json"), load_catalog())
    assert result.ok, render_resolution(result)
    assert result.mode == "plain" and result.fallback is not None
    assert result.torch is not None
    assert result.torch.requirements == ["torch==2.11.0", "torchvision==0.26.0", "torchaudio==2.11.0"]
    assert result.torch.cuda == "13.0" and "adopted venv /opt/torch/.venv" in result.torch.why
    assert not any("will be replaced" in note for note in result.notes)


def test_the_dgx_spark_manifest_builds_nunchaku_for_sm_121a() -> None:
    """GB10 hosts are aarch64: no wheel exists, so the stack builds nunchaku 1.2.1 for 121a (nvcc 13)."""
    loaded = load_manifest(REPO / "manifests" / "dgx-spark.yaml")
    result = resolve(loaded.manifest, load_facts(FACTS / "dgx-spark.json"), load_catalog())
    assert result.ok, render_resolution(result)
    assert result.mode == "nunchaku" and result.platform == "linux_aarch64"
    assert result.gpu is not None and result.gpu.arch == "sm_121" and result.gpu.precision == "fp4"
    assert result.nunchaku is not None and result.nunchaku.build is not None
    build = result.nunchaku.build
    assert build.arches == ["121a"] and build.install_mode == "FAST" and build.add_supported_arches == []
    assert build.version == "1.2.1" and build.cuda == "13.0" and build.prerequisites.nvcc_major == "13"
    assert result.nunchaku.filename.endswith("+cu13.0torch2.11-cp312-cp312-linux_aarch64.whl")
    assert build.warnings == []


def test_the_gpu_machine_source_manifest_builds_int4_for_sm_90_behind_the_override() -> None:
    """h200-source.json: the GPU machine's facts (venv, driver, GPU) with its compilers (nvcc 13.0.88 under
    CUDA_HOME=/usr/local/cuda, /usr/bin/gcc and g++ 13.3.0, 16 cores)."""
    loaded = load_manifest(REPO / "manifests" / "h200-source.yaml")
    result = resolve(loaded.manifest, load_facts(FACTS / "h200-source.json"), load_catalog())
    assert result.ok, render_resolution(result)
    assert result.mode == "nunchaku" and result.gpu is not None and result.gpu.precision == "int4"
    assert result.torch is not None and result.torch.requirements[0] == "torch==2.11.0"
    assert result.nunchaku is not None and result.nunchaku.build is not None
    build = result.nunchaku.build
    assert result.nunchaku.filename == "nunchaku-1.2.1+cu13.0torch2.11-cp312-cp312-linux_x86_64.whl"
    assert build.arches == ["90"] and build.add_supported_arches == ["90"] and build.install_mode == "FAST"
    assert (build.cc, build.cxx, build.cuda_home) == ("/usr/bin/gcc", "/usr/bin/g++", "/usr/local/cuda")
    assert build.predicted_jobs == 16
    assert any("sm_90 is not in nunchaku's list" in w and "INT4 MMA emulated" in w for w in build.warnings)
    assert result.plugin is not None and result.plugin.ref == "v1.2.1"
    assert loaded.manifest.checks.nodes == ["NunchakuFluxDiTLoader", "NunchakuQwenImageDiTLoader"]
    assert result.models == []


def test_checks_on_a_source_build_manifest_name_apply_as_the_fix() -> None:
    loaded = load_manifest(REPO / "manifests" / "dgx-spark.yaml")
    result = resolve(loaded.manifest, load_facts(FACTS / "dgx-spark.json"), load_catalog())
    criteria = plan_checks(loaded.manifest, REPO / "manifests", resolution=result).criteria
    assert criteria.built_on_host and criteria.built_on_host.startswith("run `provision apply` for this manifest")
    assert "linux_aarch64.whl from source" in criteria.built_on_host
    wheel_manifest = load_manifest(REPO / "manifests" / "rtx3090.yaml")
    wheel = resolve(wheel_manifest.manifest, load_facts(FACTS / "rtx3090.json"), load_catalog())
    assert plan_checks(wheel_manifest.manifest, REPO / "manifests", resolution=wheel).criteria.built_on_host is None
