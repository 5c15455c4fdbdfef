"""Complete model sets: every shipped GPU manifest installs what its model's standard workflow loads, and
the catalog's sets agree with the official ComfyUI templates (comfyui-workflow-templates-json on PyPI)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from provisioner.catalog import load_catalog
from provisioner.engine import expand_stack
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.manifest.model import ModelSpec
from provisioner.resolve import render_resolution, resolve
from provisioner.resolve.models import plan_models

REPO = Path(__file__).resolve().parents[2]
FACTS = Path(__file__).resolve().parent / "facts"
HF = "https://huggingface.co/"
CLIP_L = ("text_encoders", "clip_l.safetensors", "comfyanonymous/flux_text_encoders")
T5_FP16 = ("text_encoders", "t5xxl_fp16.safetensors", "comfyanonymous/flux_text_encoders")
T5_FP8 = ("text_encoders", "t5xxl_fp8_e4m3fn_scaled.safetensors", "comfyanonymous/flux_text_encoders")
T5_AWQ = ("text_encoders", "awq-int4-flux.1-t5xxl.safetensors", "nunchaku-tech/nunchaku-t5")
FLUX_VAE = ("vae", "ae.safetensors", "Comfy-Org/Lumina_Image_2.0_Repackaged")
QWEN_TE = ("text_encoders", "qwen_2.5_vl_7b_fp8_scaled.safetensors", "Comfy-Org/Qwen-Image_ComfyUI")
QWEN_VAE = ("vae", "qwen_image_vae.safetensors", "Comfy-Org/Qwen-Image_ComfyUI")


def _diffusion(name: str, repo: str) -> tuple[str, str, str]:
    return ("diffusion_models", name, repo)


@pytest.mark.parametrize(
    ("manifest", "facts", "expected"),
    [
        ("rtx3090", "rtx3090", [
            _diffusion("svdq-int4_r128-qwen-image-edit-2509-lightningv2.0-4steps.safetensors",
                       "nunchaku-tech/nunchaku-qwen-image-edit-2509"),
            QWEN_TE, QWEN_VAE,  # no LoRA: nunchaku's Lightning file has it merged
        ]),
        # The manifest lists the AWQ T5 itself, which fills the set's T5 slot.
        ("rtx4090", "rtx4090", [_diffusion("svdq-int4_r32-flux.1-dev.safetensors", "nunchaku-tech/nunchaku-flux.1-dev"),
                                T5_AWQ, CLIP_L, FLUX_VAE]),
        ("docker", "rtx4090", [_diffusion("svdq-int4_r32-flux.1-dev.safetensors", "nunchaku-tech/nunchaku-flux.1-dev"),
                               T5_AWQ, CLIP_L, FLUX_VAE]),
        ("rtx5090", "rtx5090", [_diffusion("svdq-fp4_r32-flux.1-dev.safetensors", "nunchaku-tech/nunchaku-flux.1-dev"),
                                T5_AWQ, CLIP_L, FLUX_VAE]),
        # 80 GiB: the FP16 T5 of the standard FLUX workflow; 15 GiB (T4): the FP8 one.
        ("a100", "a100", [_diffusion("svdq-int4_r32-flux.1-schnell.safetensors",
                                     "nunchaku-tech/nunchaku-flux.1-schnell"), CLIP_L, T5_FP16, FLUX_VAE]),
        ("t4", "t4", [_diffusion("svdq-int4_r32-flux.1-schnell.safetensors", "nunchaku-tech/nunchaku-flux.1-schnell"),
                      CLIP_L, T5_FP8, FLUX_VAE]),
    ],
)
def test_shipped_gpu_manifest_installs_its_whole_set(manifest: str, facts: str,
                                                     expected: list[tuple[str, str, str]]) -> None:
    loaded = load_manifest(REPO / "manifests" / f"{manifest}.yaml")
    host = load_facts(FACTS / f"{facts}.json")
    result = resolve(loaded.manifest, host, load_catalog())
    assert result.ok, render_resolution(result)
    assert [(m.folder, m.filename, m.repo) for m in result.models] == expected
    roles = {m.role for m in result.models}
    assert {"diffusion model", "text encoder", "VAE"} <= roles
    for model in result.models:
        assert model.url == f"{HF}{model.repo}/resolve/main/{model.file}"
        assert model.size, f"{model.filename} has no size for the disk check"
    # Every file is a download into its ComfyUI folder, verified by sha256 where the catalog has one.
    downloads = {r.spec["path"]: r.spec for r in expand_stack(loaded, host, result).expansion.resources
                 if r.kind == "download"}
    for model in result.models:
        spec = downloads[f"ComfyUI/models/{model.folder}/{model.filename}"]
        assert (spec["url"], spec["sha256"]) == (model.url, model.sha256)
    text = render_resolution(result)
    assert all(f"{m.folder}/{m.filename}" in text for m in result.models)


def test_rtx3090_lists_the_qwen_image_edit_set_with_sizes_and_hashes() -> None:
    loaded = load_manifest(REPO / "manifests" / "rtx3090.yaml")
    result = resolve(loaded.manifest, load_facts(FACTS / "rtx3090.json"), load_catalog())
    _, encoder, vae = result.models
    assert (encoder.size, encoder.sha256, encoder.node) == (
        9_384_670_680, "cb5636d852a0ea6a9075ab1bef496c0db7aef13c02350571e388aea959c5c0b4", "CLIPLoader")
    assert (vae.size, vae.sha256, vae.node) == (
        253_806_246, "a70580f0213e67967ee9c95f05bb400e8fb08307e017a924bf3441223e023d1f", "VAELoader")
    assert encoder.companion_of == vae.companion_of == "qwen-image-edit-2509"
    text = render_resolution(result)
    assert "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors (9.4 GB)  [text encoder for qwen-image-edit-2509]" \
        in text
    assert "(sha256 a70580f0213e…)" in text


def _plan(file: str, repo: str, nunchaku: bool, vram_gib: float | None, **extra: Any) -> list[tuple[str, str]]:
    spec = ModelSpec.model_validate({"repo": repo, "file": file, **extra})
    plan = plan_models([spec], load_catalog(), "int4" if nunchaku else None, nunchaku, vram_gib)
    assert not plan.violations, plan.violations
    assert len(plan.entries) == len(plan.models)
    return [(m.folder, m.filename) for m in plan.models]


FLUX_DEV = ("svdq-{precision}_r32-flux.1-dev.safetensors", "nunchaku-tech/nunchaku-flux.1-dev")


@pytest.mark.parametrize(
    ("vram_gib", "t5"),
    [(80, "t5xxl_fp16.safetensors"), (23.99, "t5xxl_fp16.safetensors"), (16, "t5xxl_fp8_e4m3fn_scaled.safetensors"),
     (8, "awq-int4-flux.1-t5xxl.safetensors"), (None, "t5xxl_fp16.safetensors")],
)
def test_flux_t5_follows_gpu_memory(vram_gib: float | None, t5: str) -> None:
    assert _plan(*FLUX_DEV, nunchaku=True, vram_gib=vram_gib) == [
        ("diffusion_models", "svdq-int4_r32-flux.1-dev.safetensors"),
        ("text_encoders", "clip_l.safetensors"), ("text_encoders", t5), ("vae", "ae.safetensors")]


def test_plain_comfyui_never_gets_the_awq_t5() -> None:
    kontext = ("svdq-{precision}_r32-flux.1-kontext-dev.safetensors", "nunchaku-tech/nunchaku-flux.1-kontext-dev")
    assert ("text_encoders", "t5xxl_fp8_e4m3fn_scaled.safetensors") in _plan(*kontext, nunchaku=False, vram_gib=8)


def test_self_contained_fp8_checkpoint_needs_no_set() -> None:
    assert _plan(*FLUX_DEV, nunchaku=False, vram_gib=80) == [("checkpoints", "flux1-dev-fp8.safetensors")]


@pytest.mark.parametrize(("file", "lora"), [
    ("svdq-{precision}_r32-qwen-image-edit-2509-lightningv2.0-8steps.safetensors",
     "Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors"),
    ("svdq-{precision}_r32-qwen-image-edit-2509.safetensors",
     "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors"),
])
def test_plain_qwen_gets_the_lightning_lora_nunchaku_merges(file: str, lora: str) -> None:
    repo = "nunchaku-tech/nunchaku-qwen-image-edit-2509"
    assert ("loras", lora) in _plan(file, repo, nunchaku=False, vram_gib=80)
    assert not any(folder == "loras" for folder, _ in _plan(file, repo, nunchaku=True, vram_gib=24))


def test_a_model_can_leave_its_set_out_and_shared_files_appear_once() -> None:
    assert _plan(*FLUX_DEV, nunchaku=True, vram_gib=24, companions=False) == [
        ("diffusion_models", "svdq-int4_r32-flux.1-dev.safetensors")]
    catalog = load_catalog()
    specs = [ModelSpec.model_validate({"repo": FLUX_DEV[1], "file": FLUX_DEV[0]}),
             ModelSpec.model_validate({"repo": "nunchaku-tech/nunchaku-flux.1-schnell",
                                       "file": "svdq-{precision}_r32-flux.1-schnell.safetensors"})]
    files = [(m.folder, m.filename) for m in plan_models(specs, catalog, "int4", True, 24).models]
    assert len(files) == len(set(files)) == 5


# --- the catalog against the official templates ------------------------------------------------------


def _template_models(name: str) -> set[tuple[str, str, str]]:
    """(folder, repo, path in repo) of every model the template's loader nodes name, subgraphs included."""
    package = resources.files("comfyui_workflow_templates_json").joinpath("templates")
    workflow = json.loads(package.joinpath(name).read_text(encoding="utf-8"))
    graphs = [workflow, *((workflow.get("definitions") or {}).get("subgraphs") or [])]
    found = set()
    for graph in graphs:
        for node in graph.get("nodes", []):
            for model in (node.get("properties") or {}).get("models") or []:
                url = urlsplit(model["url"])
                assert url.netloc == "huggingface.co", model
                owner, repo, resolve_, _revision, path = url.path.lstrip("/").split("/", 4)
                assert resolve_ == "resolve" and path.rsplit("/", 1)[-1] == model["name"], model
                found.add((model["directory"], f"{owner}/{repo}", path))
    assert found, f"{name} names no models"
    return found


def _with_templates() -> list[Any]:
    return [pytest.param(e.id, e.template, id=e.id) for e in load_catalog().model_entries() if e.template]


@pytest.mark.parametrize(("entry_id", "template"), _with_templates())
def test_catalog_set_is_the_templates_model_set(entry_id: str, template: str) -> None:
    pytest.importorskip("comfyui_workflow_templates_json", reason="installed by the dev extras")
    catalog = load_catalog()
    entry = next(e for e in catalog.model_entries() if e.id == entry_id)
    wanted = _template_models(template)
    spec = ModelSpec.model_validate({"repo": entry.repo, "file": entry.files[0]})
    # With nunchaku on a large GPU: the template's text encoders and VAE around the svdq file; its LoRA
    # only where nunchaku has none merged in (the first file is the plain, non-Lightning one).
    plan = plan_models([spec], catalog, "int4", True, 80)
    assert not plan.violations, plan.violations
    assert plan.models[0].folder == "diffusion_models" and plan.models[0].repo == entry.repo
    companions = {(m.folder, m.repo, m.file) for m in plan.models[1:]}
    assert companions == {w for w in wanted if w[0] in ("text_encoders", "vae")}
    if entry.fallback is None:
        return
    # Plain ComfyUI on a large GPU is what the template itself runs: the same files, or the bundled
    # checkpoint alone where the catalog's replacement is one.
    plan = plan_models([spec], catalog, None, False, 80)
    chosen = {(m.folder, m.repo, m.file) for m in plan.models}
    if entry.fallback.self_contained:
        assert chosen == {(entry.fallback.folder, entry.fallback.repo, entry.fallback.file)}
    else:
        assert chosen == wanted


def test_every_catalog_set_file_is_named_by_an_official_template() -> None:
    pytest.importorskip("comfyui_workflow_templates_json", reason="installed by the dev extras")
    package = resources.files("comfyui_workflow_templates_json").joinpath("templates")
    corpus = "\n".join(p.read_text(encoding="utf-8") for p in package.iterdir() if p.name.endswith(".json"))
    catalog = load_catalog()
    for key, file in catalog.models.companion_files.items():
        url = catalog.model_url(file.repo, file.file)
        if file.unverified:
            assert url not in corpus, f"{key} is in an official template now: drop `unverified`"
            assert file.source
        else:
            assert url in corpus, f"{key}: {url} is in no official template; mark it `unverified` with its source"
