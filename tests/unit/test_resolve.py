"""The resolver over real catalog entries and recorded host facts (tests/unit/facts/*.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from provisioner.catalog import Catalog, load_catalog
from provisioner.commands.resolve import resolve_command
from provisioner.facts import Facts, FactsError, load_facts
from provisioner.manifest.model import Manifest
from provisioner.resolve import Resolution, render_resolution, resolve

FACTS = Path(__file__).parent / "facts"
PLUGIN = {"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku"}
FLUX = {"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-{precision}_r32-flux.1-dev.safetensors"}
T5 = {"repo": "nunchaku-tech/nunchaku-t5", "file": "awq-int4-flux.1-t5xxl.safetensors", "folder": "text_encoders"}
QWEN = {"repo": "nunchaku-tech/nunchaku-qwen-image", "file": "svdq-{precision}_r32-qwen-image.safetensors"}
EDIT_2509_LIGHTNING = {
    "repo": "nunchaku-tech/nunchaku-qwen-image-edit-2509",
    "file": "svdq-{precision}_r{rank}-qwen-image-edit-2509-lightningv2.0-4steps.safetensors",
    "rank": 128,
}
ZIMAGE = {"repo": "nunchaku-tech/nunchaku-z-image-turbo", "file": "svdq-{precision}_r{rank}-z-image-turbo.safetensors"}
GITHUB = "https://github.com/nunchaku-ai/nunchaku/releases/download"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def facts(name: str, **changes: Any) -> Facts:
    loaded = load_facts(FACTS / f"{name}.json")
    return loaded.model_copy(update=changes) if changes else loaded


def manifest(**sections: Any) -> Manifest:
    data: dict[str, Any] = {"name": "test", "comfyui": {"plugins": [PLUGIN]}, "models": [FLUX]}
    data.update(sections)
    return Manifest.model_validate(data)


def run(host: str | Facts, **sections: Any) -> Resolution:
    host_facts = facts(host) if isinstance(host, str) else host
    return resolve(manifest(**sections), host_facts, load_catalog())


def only_violation(res: Resolution) -> tuple[str, str, str]:
    assert len(res.violations) == 1, render_resolution(res)
    v = res.violations[0]
    return v.field, v.reason, v.fix


# --- done-when: the reference GPUs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "arch", "precision", "dtype", "wheel", "torch", "index"),
    [
        (
            "rtx3090",
            "sm_86",
            "int4",
            "bfloat16",
            "nunchaku-1.2.1+cu12.8torch2.10-cp312-cp312-linux_x86_64.whl",
            "2.10.0",
            "cu128",
        ),
        (
            "rtx4090",
            "sm_89",
            "int4",
            "bfloat16",
            "nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl",
            "2.10.0",
            "cu130",
        ),
        (
            "rtx5090",
            "sm_120",
            "fp4",
            "bfloat16",
            "nunchaku-1.2.1+cu12.8torch2.10-cp312-cp312-linux_x86_64.whl",
            "2.10.0",
            "cu128",
        ),
        ("a100", "sm_80", "int4", "bfloat16", "nunchaku-1.0.1+torch2.6-cp312-cp312-linux_x86_64.whl", "2.6.0", "cu124"),
        (
            "t4",
            "sm_75",
            "int4",
            "float16",
            "nunchaku-1.2.1+cu12.8torch2.10-cp312-cp312-linux_x86_64.whl",
            "2.10.0",
            "cu128",
        ),
    ],
)
def test_reference_gpus_resolve(
    host: str, arch: str, precision: str, dtype: str, wheel: str, torch: str, index: str
) -> None:
    res = run(host, models=[FLUX, T5])
    assert res.ok, render_resolution(res)
    assert res.mode == "nunchaku"
    assert res.gpu is not None and (res.gpu.arch, res.gpu.precision, res.gpu.dtype) == (arch, precision, dtype)
    assert res.nunchaku is not None and res.nunchaku.filename == wheel
    version = res.nunchaku.version
    assert res.nunchaku.urls[0] == f"{GITHUB}/v{version}/{wheel}"
    assert res.torch is not None and res.torch.version == torch
    assert res.torch.index_url == f"https://download.pytorch.org/whl/{index}"
    # The index labels its wheels with the build; pinning the label makes a torch of another build drift.
    assert f"torch=={torch}+{index}" in res.torch.requirements
    assert res.plugin is not None and res.plugin.ref == "v1.2.1"
    assert res.comfyui is not None and res.comfyui.ref == "v0.7.0"
    flux, t5, *companions = res.models
    # The listed AWQ T5 fills the workflow's T5 slot; CLIP-L and the VAE come from the FLUX.1 set.
    assert [(m.folder, m.filename, m.companion_of) for m in companions] == [
        ("text_encoders", "clip_l.safetensors", "flux.1-dev"),
        ("vae", "ae.safetensors", "flux.1-dev"),
    ]
    assert flux.file == f"svdq-{precision}_r32-flux.1-dev.safetensors"
    assert flux.url == f"https://huggingface.co/nunchaku-tech/nunchaku-flux.1-dev/resolve/main/{flux.file}"
    assert (flux.folder, flux.node, flux.rank, flux.precision) == (
        "diffusion_models",
        "NunchakuFluxDiTLoader",
        32,
        precision,
    )
    assert flux.size == (7_040_000_000 if precision == "fp4" else 6_770_000_000)
    assert (t5.file, t5.folder, t5.precision) == ("awq-int4-flux.1-t5xxl.safetensors", "text_encoders", None)
    for choice in (res.gpu.why, res.torch.why, res.nunchaku.why, res.plugin.why, flux.why):
        assert choice


def test_old_release_urls_include_mirrors() -> None:
    res = run("a100")
    assert res.nunchaku is not None
    assert res.nunchaku.urls == [
        f"{GITHUB}/v1.0.1/nunchaku-1.0.1+torch2.6-cp312-cp312-linux_x86_64.whl",
        "https://github.com/nunchaku-tech/nunchaku/releases/download/v1.0.1/"
        "nunchaku-1.0.1+torch2.6-cp312-cp312-linux_x86_64.whl",
        "https://huggingface.co/nunchaku-tech/nunchaku/resolve/main/nunchaku-1.0.1+torch2.6-cp312-cp312-linux_x86_64.whl",
        "https://modelscope.cn/models/nunchaku-tech/nunchaku/resolve/master/"
        "nunchaku-1.0.1+torch2.6-cp312-cp312-linux_x86_64.whl",
    ]


@pytest.mark.parametrize("host", ["h100", "b200"])
def test_datacenter_gpus_fall_back_to_fp8(host: str) -> None:
    res = run(host, models=[FLUX, T5, EDIT_2509_LIGHTNING])
    assert res.ok, render_resolution(res)
    assert res.mode == "plain"
    assert res.nunchaku is None
    assert res.plugin is not None and res.plugin.ref == "v1.2.1", "the listed plugin is installed, so it is pinned"
    assert "cannot load without nunchaku" in res.plugin.why
    assert res.fallback is not None and "FP8" in res.fallback and "nunchaku cannot run" in res.fallback
    assert [(m.folder, m.filename, m.fallback) for m in res.models] == [
        ("checkpoints", "flux1-dev-fp8.safetensors", True),
        ("text_encoders", "t5xxl_fp8_e4m3fn_scaled.safetensors", True),
        ("diffusion_models", "qwen_image_edit_2509_fp8_e4m3fn.safetensors", True),
        # The FP8 checkpoint bundles FLUX's encoders and VAE; the plain Qwen-Image-Edit-2509 needs its own,
        # and the Lightning LoRA that nunchaku's lightning file has merged in.
        ("text_encoders", "qwen_2.5_vl_7b_fp8_scaled.safetensors", False),
        ("vae", "qwen_image_vae.safetensors", False),
        ("loras", "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors", False),
    ]
    assert res.models[2].file == "split_files/diffusion_models/qwen_image_edit_2509_fp8_e4m3fn.safetensors"
    assert not any("skipped" in note for note in res.notes), res.notes


def test_h100_explains_hopper_and_uses_cu128_torch() -> None:
    res = run("h100")
    assert res.fallback is not None and "Hopper has no 4-bit tensor cores" in res.fallback
    assert res.torch is not None and (res.torch.version, res.torch.cuda) == ("2.10.0", "12.8")
    assert res.gpu is not None and res.gpu.precision is None


def test_b200_torch_needs_cuda_128_or_newer() -> None:
    res = run("b200")
    assert res.torch is not None and res.torch.cuda == "13.0"
    res = run("b200", cuda={"version": "12.6"})
    field, reason, _ = only_violation(res)
    assert field == "host" and "needs a torch CUDA build >= 12.8" in reason


@pytest.mark.parametrize(("precision", "host"), [("int4", "h100"), ("fp4", "h100"), ("int4", "b200")])
def test_explicit_precision_on_datacenter_gpus_is_refused(precision: str, host: str) -> None:
    field, reason, fix = only_violation(run(host, nunchaku={"precision": precision}))
    assert field == "nunchaku.precision"
    assert "nunchaku cannot run on" in reason
    assert "nunchaku.precision: auto" in fix and "FP8" in fix


# --- pins and ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "sections", "wheel"),
    [
        ("rtx4090", {"nunchaku": {"version": "1.0.1"}}, "nunchaku-1.0.1+torch2.8-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"nunchaku": {"version": "1.0.2"}}, "nunchaku-1.0.2+torch2.9-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"nunchaku": {"version": "1.2.0"}}, "nunchaku-1.2.0+torch2.9-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"nunchaku": {"version": "<1.2"}}, "nunchaku-1.1.0+torch2.9-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"nunchaku": {"version": "0.3.1"}}, "nunchaku-0.3.1+torch2.7-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"torch": {"version": "2.8"}}, "nunchaku-1.2.1+cu12.8torch2.8-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"torch": {"version": "2.9.1"}}, "nunchaku-1.2.1+cu13.0torch2.9-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"torch": {"version": ">=2.7,<2.9"}}, "nunchaku-1.2.1+cu12.8torch2.8-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"cuda": {"version": "12.8"}}, "nunchaku-1.2.1+cu12.8torch2.10-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"torch": {"version": "2.6"}}, "nunchaku-1.0.1+torch2.6-cp312-cp312-linux_x86_64.whl"),
        ("rtx4090", {"python": {"version": "3.10"}}, "nunchaku-1.2.1+cu13.0torch2.10-cp310-cp310-linux_x86_64.whl"),
        ("rtx4090", {"python": {"version": "3.13"}}, "nunchaku-1.2.1+cu13.0torch2.10-cp313-cp313-linux_x86_64.whl"),
        ("rtx3090", {"nunchaku": {"version": "1.1.0"}}, "nunchaku-1.1.0+torch2.8-cp312-cp312-linux_x86_64.whl"),
        ("rtx5090", {"torch": {"version": "2.7"}}, "nunchaku-1.2.0+torch2.7-cp312-cp312-linux_x86_64.whl"),
        (
            "rtx5090",
            {"nunchaku": {"version": "0.3.0"}, "comfyui": None},
            "nunchaku-0.3.0+torch2.7-cp312-cp312-linux_x86_64.whl",
        ),
        (
            "rtx5090",
            {"nunchaku": {"version": "0.2.0", "allow_nightly_torch_builds": True}, "comfyui": None},
            "nunchaku-0.2.0+torch2.8-cp312-cp312-linux_x86_64.whl",
        ),
        (
            "t4",
            {"nunchaku": {"version": "0.2.0"}, "comfyui": None},
            "nunchaku-0.2.0+torch2.6-cp312-cp312-linux_x86_64.whl",
        ),
        (
            "a100",
            {"python": {"version": "3.11"}, "nunchaku": {"version": "0.1.4"}, "comfyui": None},
            "nunchaku-0.1.4+torch2.6-cp311-cp311-linux_x86_64.whl",
        ),
    ],
)
def test_pins_pick_the_newest_fitting_wheel(host: str, sections: dict[str, Any], wheel: str) -> None:
    res = run(host, **sections)
    assert res.ok, render_resolution(res)
    assert res.nunchaku is not None and res.nunchaku.filename == wheel


def test_python_313_excludes_torch_25() -> None:
    res = run("rtx4090", python={"version": "3.13"}, torch={"version": "2.5"})
    # torch 2.5 has cp313 wheels, but no nunchaku release ships +torch2.5 for cp313
    assert not res.ok
    assert "2.5" in res.violations[0].reason


def test_plugin_follows_the_backend() -> None:
    res = run("rtx4090", nunchaku={"version": "0.3.1"})
    assert res.plugin is not None and res.plugin.ref == "v0.3.3"
    res = run("rtx4090", nunchaku={"version": "0.3.2"})
    assert res.plugin is not None and res.plugin.ref == "v0.3.4"
    res = run("rtx4090", nunchaku={"version": "0.2.0"})
    assert res.plugin is not None and res.plugin.ref == "v0.2.0"


def test_nightly_build_allowed_on_request() -> None:
    res = run("rtx4090", nunchaku={"version": "1.0.1", "allow_nightly_torch_builds": True}, torch={"version": "2.10"})
    assert res.ok, render_resolution(res)
    assert res.nunchaku is not None and res.nunchaku.nightly_torch_build
    assert res.nunchaku.filename == "nunchaku-1.0.1+torch2.10-cp312-cp312-linux_x86_64.whl"
    assert any("nightly" in note for note in res.notes)


def test_auto_prefers_stable_builds_over_nightly() -> None:
    res = run("rtx4090", nunchaku={"allow_nightly_torch_builds": True})
    assert res.nunchaku is not None and not res.nunchaku.nightly_torch_build


def test_wheel_url_override() -> None:
    url = "https://mirror.example/nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl"
    res = run("rtx4090", nunchaku={"wheel_url": url, "wheel_sha256": "a" * 64})
    assert res.nunchaku is not None and res.nunchaku.urls == [url]
    assert res.nunchaku.sha256 == "a" * 64 and "overrides" in res.nunchaku.why


def test_adopted_venv_keeps_its_torch() -> None:
    host = facts("rtx4090")
    venv = {
        "path": "/srv/provision/venv",
        "torch": {"version": "2.8.0+cu128", "cuda": "12.8", "local": "cu128"},
        "nunchaku": None,
        "packages": {"torch": "2.8.0+cu128"},
    }
    host = Facts.model_validate({**host.model_dump(), "venv": venv})
    res = run(host, python={"version": "3.12", "adopt": "/srv/provision/venv"})
    assert res.nunchaku is not None and res.nunchaku.filename.startswith("nunchaku-1.2.1+cu12.8torch2.8-")
    assert res.torch is not None
    assert res.torch.requirements == ["torch==2.8.0", "torchvision==0.23.0", "torchaudio==2.8.0"]
    res = run(host)
    assert res.torch is not None and res.torch.version == "2.10.0"
    assert any("will be replaced" in note for note in res.notes)


def test_explicit_torch_index_url_is_kept() -> None:
    res = run("rtx4090", torch={"index_url": "https://mirror.example/whl/cu130"})
    assert res.torch is not None and res.torch.index_url == "https://mirror.example/whl/cu130"


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "sections", "field", "reason_part", "fix_part"),
    [
        (
            "rtx3090",
            {"nunchaku": {"version": "1.0.1"}, "torch": {"version": "2.9"}},
            "torch.version",
            "nunchaku 1.0.1 has no wheel for torch 2.9",
            "set nunchaku.version to 1.2.1 (or 1.0.2)",
        ),
        (
            "rtx4090",
            {"nunchaku": {"version": "1.0.1"}, "torch": {"version": "2.10"}},
            "nunchaku.allow_nightly_torch_builds",
            "compiled against a PyTorch nightly",
            "Set nunchaku.allow_nightly_torch_builds to true",
        ),
        (
            "rtx5090",
            {"torch": {"version": "2.6"}},
            "torch.version",
            "needs a nunchaku build compiled with CUDA >= 12.8",
            "Set torch.version to 2.10 (or 2.9, 2.8, 2.7)",
        ),
        ("rtx5090", {"cuda": {"version": "12.4"}}, "cuda.version", "CUDA >= 12.8", "Set cuda.version to"),
        (
            "rtx5090",
            {"nunchaku": {"version": "0.1.4"}},
            "host",
            "no remaining nunchaku build has kernels for sm_120",
            "Set nunchaku.version to 1.2.1",
        ),
        ("old-driver", {}, "host", "driver 550.54.14 is too old", "Upgrade the NVIDIA driver to >= 570.26"),
        (
            "a100",
            {"torch": {"version": "2.10"}},
            "host",
            "driver 550.54.15 is too old",
            "Upgrade the NVIDIA driver to >= 570.26",
        ),
        ("rtx3090", {"cuda": {"version": "13.0"}}, "host", "too old", "set cuda.version to 12.8"),
        (
            "rtx4090",
            {"python": {"version": "3.14"}},
            "python.version",
            "no wheel for Python 3.14",
            "Set python.version to 3.13 (or 3.12, 3.11, 3.10)",
        ),
        (
            "rtx4090",
            {"nunchaku": {"version": "0.3.1"}, "python": {"version": "3.13"}},
            "python.version",
            "nunchaku 0.3.1 has no wheel for Python 3.13",
            "Set python.version to 3.12",
        ),
        (
            "rtx4090",
            {"nunchaku": {"version": "9.9.9"}},
            "nunchaku.version",
            "no nunchaku release in the catalog",
            "Set nunchaku.version to 1.2.1",
        ),
        ("rtx4090", {"torch": {"version": "2.4"}}, "torch.version", "no wheel for torch 2.4", "Set torch.version to"),
        (
            "rtx4090",
            {"nunchaku": {"precision": "fp4"}},
            "nunchaku.precision",
            "fp4 models do not run on sm_89",
            "Set nunchaku.precision to int4",
        ),
        (
            "rtx5090",
            {"nunchaku": {"precision": "int4"}},
            "nunchaku.precision",
            "int4 models do not run on sm_120",
            "Set nunchaku.precision to fp4",
        ),
        ("aarch64", {}, "host", "no nunchaku wheels are built for aarch64", "Use an x86_64 host"),
        ("nogpu", {}, "gpu", "no NVIDIA GPU found", "gpu.allow_cpu: true"),
        (
            "pypi-nunchaku",
            {"python": {"adopt": "/srv/provision/venv"}},
            "host",
            "unrelated PyPI package 'nunchaku' 0.16.1",
            "/srv/provision/venv/bin/pip uninstall -y nunchaku",
        ),
        ("rtx4090", {"gpu": {"index": 1}}, "gpu.index", "the host has GPU index 0", "Set gpu.index to one of: 0"),
        (
            "rtx4090",
            {"gpu": {"arch": "sm_86"}},
            "gpu.arch",
            "GPU 0 (NVIDIA GeForce RTX 4090) is sm_89",
            "Set gpu.arch to sm_89",
        ),
        ("rtx4090", {"gpu": {"min_vram_gb": 48}}, "gpu.min_vram_gb", "less than gpu.min_vram_gb 48", "more memory"),
        (
            "rtx3090",
            {"cuda": {"min_driver": "575"}},
            "cuda.min_driver",
            "older than cuda.min_driver 575",
            "Upgrade the NVIDIA driver to >= 575",
        ),
        (
            "rtx4090",
            {"cuda": {"version": "cpu"}},
            "cuda.version",
            "nunchaku needs a CUDA build of torch",
            "nunchaku.enabled: false",
        ),
        (
            "rtx4090",
            {"models": [{"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-fp4_r32-flux.1-dev.safetensors"}]},
            "models[0].file",
            "is a FP4 model, but this GPU needs INT4",
            "svdq-{precision}_r32-flux.1-dev.safetensors",
        ),
        (
            "rtx5090",
            {"models": [{"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-int4_r32-flux.1-dev.safetensors"}]},
            "models[0].file",
            "is a INT4 model, but this GPU needs FP4",
            "{precision}",
        ),
        (
            "rtx4090",
            {"models": [dict(FLUX, rank=128)]},
            "models[0].rank",
            "no int4 file with rank 128",
            "Set rank to one of: 32",
        ),
        (
            "rtx5090",
            {"models": [dict(ZIMAGE, rank=256)]},
            "models[0].rank",
            "no fp4 file with rank 256",
            "Set rank to one of: 32, 128",
        ),
        (
            "rtx4090",
            {"models": [QWEN], "comfyui": {"ref": "v0.3.64", "plugins": [dict(PLUGIN, ref="v1.2.1")]}},
            "comfyui.ref",
            "needs ComfyUI >=0.7.0",
            "set comfyui.ref to v0.7.0",
        ),
        (
            "rtx4090",
            {"models": [EDIT_2509_LIGHTNING], "comfyui": {"ref": "v0.3.50", "plugins": [PLUGIN]}},
            "comfyui.ref",
            "qwen-image-edit-2509 needs ComfyUI >=0.3.60",
            "Set comfyui.ref to v0.7.0 (or v0.3.64, v0.3.60)",
        ),
        (
            "rtx4090",
            {"comfyui": {"plugins": [dict(PLUGIN, ref="v1.0.2")]}, "nunchaku": {"version": "0.3.2"}},
            "comfyui.plugins[0].ref",
            "1.0.2 needs nunchaku >=1.0.0",
            "set comfyui.plugins[0].ref to v0.3.4",
        ),
        (
            "rtx4090",
            {"comfyui": {"plugins": [dict(PLUGIN, ref="v0.3.4")]}, "models": [QWEN]},
            "comfyui.plugins[0].ref",
            "registers all of NunchakuQwenImageDiTLoader",
            "Qwen-Image loader",
        ),
        (
            "rtx4090",
            {"comfyui": {"plugins": []}},
            "comfyui.plugins",
            "which comfyui.plugins does not list",
            "Add to comfyui.plugins",
        ),
        (
            "rtx4090",
            {"models": [{"repo": "someone/custom", "file": "model-r{rank}.safetensors"}]},
            "models[0].rank",
            "has a {rank} placeholder",
            "Set models[0].rank",
        ),
        (
            "h100",
            {"models": [ZIMAGE]},
            "models[0]",
            "knows no plain FP8/BF16 replacement for z-image-turbo",
            "Remove models[0]",
        ),
        (
            "h100",
            {"models": [{"repo": "someone/custom", "file": "x-{precision}.safetensors"}]},
            "models[0].file",
            "{precision} placeholder",
            "plain FP8/BF16",
        ),
    ],
)
def test_refusals(host: str, sections: dict[str, Any], field: str, reason_part: str, fix_part: str) -> None:
    res = run(host, **sections)
    assert not res.ok
    matching = [v for v in res.violations if v.field == field]
    assert matching, render_resolution(res)
    violation = matching[0]
    assert reason_part in violation.reason, violation
    assert fix_part in violation.fix, violation
    assert res.torch is None and res.nunchaku is None and res.models == []


def test_every_violation_is_reported_at_once() -> None:
    host = facts("rtx4090", disk_free_bytes=1_000_000_000)
    res = run(
        host,
        python={"version": "3.14"},
        nunchaku={"precision": "fp4"},
        gpu={"min_vram_gb": 64},
        models=[FLUX, {"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-fp4_r32-flux.1-dev.safetensors"}],
    )
    fields = [v.field for v in res.violations]
    assert {"nunchaku.precision", "gpu.min_vram_gb", "models[1].file", "python.version", "models"} <= set(fields)
    for violation in res.violations:
        assert violation.reason and violation.fix


def test_independent_search_problems_are_all_reported() -> None:
    res = run("rtx3090", nunchaku={"version": "1.0.1"}, torch={"version": "2.9"}, cuda={"version": "13.0"})
    fields = {v.field for v in res.violations}
    assert {"torch.version", "cuda.version"} <= fields


def test_too_little_vram_for_the_models() -> None:
    host = facts("rtx4090")
    small = host.nvidia.model_copy(update={"gpus": [host.nvidia.gpus[0].model_copy(update={"memory_total_mib": 4096})]})
    field, reason, fix = only_violation(run(host.model_copy(update={"nvidia": small}), models=[FLUX, QWEN]))
    assert field == "models"
    assert "svdq-int4_r32-qwen-image.safetensors needs about 8 GiB" in reason and "4.0 GiB" in reason
    assert "smaller" in fix


def test_too_little_disk() -> None:
    field, reason, fix = only_violation(run(facts("rtx4090", disk_free_bytes=10_000_000_000), models=[FLUX, QWEN]))
    assert field == "models" and "only 10.0 GB is free" in reason and "Free disk space" in fix


# --- models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "spec", "file", "size", "rank"),
    [
        (
            "rtx5090",
            EDIT_2509_LIGHTNING,
            "svdq-fp4_r128-qwen-image-edit-2509-lightningv2.0-4steps.safetensors",
            13_100_000_000,
            128,
        ),
        (
            "rtx4090",
            EDIT_2509_LIGHTNING,
            "svdq-int4_r128-qwen-image-edit-2509-lightningv2.0-4steps.safetensors",
            12_700_000_000,
            128,
        ),
        (
            "rtx4090",
            dict(EDIT_2509_LIGHTNING, rank=None),
            "svdq-int4_r32-qwen-image-edit-2509-lightningv2.0-4steps.safetensors",
            11_500_000_000,
            32,
        ),
        (
            "rtx4090",
            {
                "repo": "nunchaku-ai/nunchaku-qwen-image-edit-2509",
                "file": "lightning-251115/svdq-{precision}_r32-qwen-image-edit-2509-lightning-8steps-251115"
                ".safetensors",
            },
            "lightning-251115/svdq-int4_r32-qwen-image-edit-2509-lightning-8steps-251115.safetensors",
            11_500_000_000,
            32,
        ),
        (
            "rtx5090",
            {
                "repo": "nunchaku-tech/nunchaku-flux.1-kontext-dev",
                "file": "svdq-{precision}_r32-flux.1-kontext-dev.safetensors",
            },
            "svdq-fp4_r32-flux.1-kontext-dev.safetensors",
            7_040_000_000,
            32,
        ),
        (
            "t4",
            {"repo": "mit-han-lab/nunchaku-flux.1-schnell", "file": "svdq-{precision}_r32-flux.1-schnell.safetensors"},
            "svdq-int4_r32-flux.1-schnell.safetensors",
            6_770_000_000,
            32,
        ),
        ("rtx4090", dict(ZIMAGE, rank=256), "svdq-int4_r256-z-image-turbo.safetensors", None, 256),
        (
            "rtx4090",
            {"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-int4_r32-flux.1-dev.safetensors"},
            "svdq-int4_r32-flux.1-dev.safetensors",
            6_770_000_000,
            32,
        ),
    ],
)
def test_model_files(host: str, spec: dict[str, Any], file: str, size: int | None, rank: int) -> None:
    spec = {k: v for k, v in spec.items() if v is not None}
    res = run(host, models=[spec])
    assert res.ok, render_resolution(res)
    model, *companions = res.models
    assert all(m.companion_of for m in companions)
    assert (model.file, model.size, model.rank) == (file, size, rank)
    assert model.filename == file.rsplit("/", 1)[-1]
    assert model.url is not None and model.url.endswith("/resolve/main/" + file)


def test_zimage_needs_a_backend_the_plugin_accepts() -> None:
    res = run("rtx4090", models=[dict(ZIMAGE, rank=32)], nunchaku={"version": "1.1.0"})
    assert res.ok, render_resolution(res)
    assert res.plugin is not None and res.plugin.ref == "v1.1.0"  # plugin 1.2.x wants nunchaku >= 1.2.0 for Z-Image


def test_old_comfyui_gets_a_plugin_that_still_loads_qwen() -> None:
    res = run("rtx4090", models=[QWEN], comfyui={"ref": "v0.3.64", "plugins": [PLUGIN]})
    assert res.ok, render_resolution(res)
    assert res.plugin is not None and res.plugin.ref == "v1.1.0"
    assert res.comfyui is not None and res.comfyui.ref == "v0.3.64"


def test_unknown_plugin_and_comfyui_refs_are_taken_as_written() -> None:
    res = run("rtx4090", comfyui={"ref": "master", "plugins": [dict(PLUGIN, ref="main")]})
    assert res.ok, render_resolution(res)
    assert res.plugin is not None and (res.plugin.ref, res.plugin.version) == ("main", None)
    assert res.comfyui is not None and (res.comfyui.ref, res.comfyui.version) == ("master", None)
    assert sum("not checked" in note for note in res.notes) == 2


def test_models_outside_the_catalog_pass_through() -> None:
    spec = {
        "repo": "comfyanonymous/flux_text_encoders",
        "file": "clip_l.safetensors",
        "folder": "text_encoders",
        "size": 246_000_000,
    }
    res = run("rtx4090", models=[FLUX, spec, {"repo": "someone/custom", "file": "m-{precision}.safetensors"}])
    assert res.ok, render_resolution(res)
    assert [(m.file, m.folder, m.node) for m in res.models[1:]] == [
        ("clip_l.safetensors", "text_encoders", None),
        ("m-int4.safetensors", "diffusion_models", None),
        # The listed clip_l fills its slot of the FLUX.1 set, so only the rest of the set is added.
        ("t5xxl_fp16.safetensors", "text_encoders", "DualCLIPLoader"),
        ("split_files/vae/ae.safetensors", "vae", "VAELoader"),
    ]
    assert res.models[1].size == 246_000_000


def test_turing_uses_fp16() -> None:
    res = run("t4")
    assert res.gpu is not None and res.gpu.dtype == "float16" and res.gpu.tflops_dtype == "float16"
    assert "float16" in res.gpu.why


def test_tflops_floor_from_manifest_wins() -> None:
    res = run("rtx4090", checks={"min_bf16_tflops": 100})
    assert res.gpu is not None and res.gpu.tflops_floor == 100


# --- no GPU / CPU / plain ------------------------------------------------------------------------


def test_cpu_install_when_allowed() -> None:
    res = run("nogpu", gpu={"allow_cpu": True})
    assert res.ok, render_resolution(res)
    assert res.mode == "cpu" and res.nunchaku is None and res.gpu is None
    assert res.torch is not None and res.torch.cuda is None
    assert res.torch.index_url == "https://download.pytorch.org/whl/cpu"
    assert any("nunchaku is skipped" in note for note in res.notes)


def test_declared_arch_without_a_visible_gpu() -> None:
    res = run("nogpu", gpu={"arch": "sm_89"})
    assert res.ok, render_resolution(res)
    assert res.mode == "nunchaku" and res.gpu is not None and res.gpu.arch == "sm_89"
    assert any("no GPU is visible" in note for note in res.notes)


def test_unrelated_nunchaku_in_a_managed_venv_is_replaced_not_refused() -> None:
    res = run("pypi-nunchaku")
    assert res.ok, render_resolution(res)
    assert res.nunchaku is not None
    assert any("unrelated PyPI package 'nunchaku' 0.16.1" in note and "replaces it" in note for note in res.notes)


@pytest.mark.parametrize("host", ["aarch64", "pypi-nunchaku", "rtx4090"])
def test_nunchaku_disabled_gives_a_plain_install(host: str) -> None:
    res = run(host, nunchaku={"enabled": False})
    assert res.ok, render_resolution(res)
    assert res.mode == "plain" and res.nunchaku is None and res.fallback is None
    assert res.models[0].fallback


def test_plain_install_on_blackwell_with_an_old_driver() -> None:
    field, reason, fix = only_violation(run("old-driver", nunchaku={"enabled": False}))
    assert field == "host" and "driver 550.54.14 is too old" in reason
    assert "Upgrade the NVIDIA driver to >= 570.26" in fix


def test_pre_turing_is_refused_without_fallback() -> None:
    host = facts("rtx4090")
    volta = host.nvidia.model_copy(
        update={
            "gpus": [
                host.nvidia.gpus[0].model_copy(
                    update={"name": "Tesla V100-SXM2-16GB", "compute_capability": "7.0", "arch": "sm_70"}
                )
            ]
        }
    )
    field, reason, fix = only_violation(run(host.model_copy(update={"nvidia": volta})))
    assert field == "gpu" and "Volta has no 4-bit tensor cores" in reason
    assert "nunchaku.enabled: false" in fix


# --- output ---------------------------------------------------------------------------------------


def test_render_and_json() -> None:
    res = run("rtx4090", models=[FLUX, T5])
    text = render_resolution(res, "box")
    assert text.startswith("Resolved box (nunchaku):")
    assert "nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl" in text
    assert "text_encoders/awq-int4-flux.1-t5xxl.safetensors (~3.0 GB)" in text
    data = json.loads(json.dumps(res.model_dump(mode="json")))
    assert data["nunchaku"]["version"] == "1.2.1" and data["violations"] == []
    bad = run("h100", nunchaku={"precision": "int4"})
    text = render_resolution(bad)
    assert text.startswith("Cannot resolve: 1 problem") and "fix: Set nunchaku.precision: auto" in text


# --- facts files ----------------------------------------------------------------------------------


def test_every_fixture_loads() -> None:
    for path in sorted(FACTS.glob("*.json")):
        assert load_facts(path).arch in ("x86_64", "aarch64", "arm64")


def test_facts_ignore_unknown_keys(tmp_path: Path) -> None:
    data = json.loads((FACTS / "rtx4090.json").read_text())
    data["future_fact"] = {"x": 1}
    data["nvidia"]["gpus"][0]["future"] = True
    path = tmp_path / "f.json"
    path.write_text(json.dumps(data))
    loaded = load_facts(path)
    assert loaded.nvidia.gpus[0].sm == "sm_89"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "facts file not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"nvidia": {"gpus": "none"}}', "arch: Field required"),
    ],
)
def test_bad_facts_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "facts.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(FactsError, match=message.replace("(", r"\(")):
        load_facts(path)


def test_gpu_sm_from_compute_capability() -> None:
    host = Facts.model_validate({"arch": "x86_64", "nvidia": {"gpus": [{"name": "X", "compute_capability": "12.0"}]}})
    gpu = host.gpu(0)
    assert gpu is not None and gpu.sm == "sm_120"


# --- command --------------------------------------------------------------------------------------


def _manifest_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: box\ncomfyui:\n  plugins:\n    - {name: ComfyUI-nunchaku, repo: 'https://github.com/nunchaku-ai/ComfyUI-nunchaku'}\n"
        "models:\n  - {repo: nunchaku-tech/nunchaku-flux.1-dev, file: 'svdq-{precision}_r32-flux.1-dev.safetensors'}\n"
        + extra
    )
    return path


def test_command_resolves(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        resolve_command, [str(_manifest_file(tmp_path)), "--facts", str(FACTS / "rtx5090.json")]
    )
    assert result.exit_code == 0, result.output
    assert "nunchaku-1.2.1+cu12.8torch2.10-cp312-cp312-linux_x86_64.whl" in result.output
    assert "svdq-fp4_r32-flux.1-dev.safetensors" in result.output


def test_command_json_and_violations(tmp_path: Path) -> None:
    manifest_path = _manifest_file(tmp_path, "nunchaku: {precision: int4}\n")
    result = CliRunner().invoke(resolve_command, [str(manifest_path), "--facts", str(FACTS / "h100.json"), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["violations"][0]["field"] == "nunchaku.precision"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="asserts the refusal on a host without a GPU")
def test_command_reads_live_facts_from_the_target(tmp_path: Path) -> None:
    result = CliRunner().invoke(resolve_command, [str(_manifest_file(tmp_path))])
    assert result.exit_code == 1
    assert "no NVIDIA GPU found on the host" in result.output


def test_command_reports_bad_facts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        resolve_command, [str(_manifest_file(tmp_path)), "--facts", str(tmp_path / "nope.json")]
    )
    assert result.exit_code == 1 and "facts file not found" in result.output


# --- one truth without nunchaku: the listed plugin is installed, so it is resolved and pinned ----------


@pytest.mark.parametrize(
    ("host", "sections", "mode"),
    [
        ("h100", {}, "plain"),
        ("rtx4090", {"nunchaku": {"enabled": False}}, "plain"),
        ("nogpu", {"gpu": {"allow_cpu": True}}, "cpu"),
        ("rtx4090", {"cuda": {"version": "cpu"}, "nunchaku": {"enabled": False}}, "cpu"),
    ],
)
def test_the_listed_plugin_is_resolved_in_every_mode(host: str, sections: dict[str, Any], mode: str) -> None:
    res = run(host, **sections)
    assert res.ok, render_resolution(res)
    assert res.mode == mode and res.nunchaku is None
    assert res.plugin is not None and (res.plugin.ref, res.plugin.version) == ("v1.2.1", "1.2.1")
    assert "cannot load without nunchaku" in res.plugin.why
    assert res.plugin.settings == [], "loader settings that depend on the GPU mean nothing without nunchaku"
    assert "plugin    ComfyUI-nunchaku v1.2.1" in render_resolution(res)


def test_a_pinned_plugin_ref_is_kept_without_nunchaku() -> None:
    res = run("h100", comfyui={"plugins": [dict(PLUGIN, ref="v1.0.2")]})
    assert res.ok, render_resolution(res)
    assert res.plugin is not None and res.plugin.ref == "v1.0.2" and "pinned by ref" in res.plugin.why


def test_plugin_requirements_still_hold_without_nunchaku() -> None:
    res = run("h100", comfyui={"ref": "v0.3.64", "plugins": [dict(PLUGIN, ref="v1.2.1")]},
              checks={"nodes": ["NunchakuQwenImageDiTLoader"]})
    field, reason, fix = only_violation(res)
    assert field == "comfyui.ref" and "needs ComfyUI >=0.7.0" in reason and "v0.7.0" in fix


def test_checked_plugin_nodes_without_nunchaku_are_a_note_not_a_refusal() -> None:
    res = run("h100", checks={"nodes": ["NunchakuFluxDiTLoader", "KSampler", "NunchakuWheelInstaller"]})
    assert res.ok, render_resolution(res)
    assert any("NunchakuFluxDiTLoader" in n and "will not register" in n and "`check` will report" in n
               for n in res.notes), res.notes
    # Core nodes, and the plugin's nodes that import nothing from nunchaku, register all the same.
    assert not any("KSampler" in n or "NunchakuWheelInstaller" in n for n in res.notes), res.notes


# --- versions outside the catalog ---------------------------------------------------------------------

NIGHTLY = "1.3.0.dev20260213"
NIGHTLY_URL = (f"{GITHUB}/v1.3.0dev20260213/nunchaku-{NIGHTLY}+cu13.0torch2.12-cp312-cp312-linux_x86_64.whl")


@pytest.mark.parametrize(
    ("host", "sections", "requirements", "cuda"),
    [
        ("rtx4090", {"nunchaku": {"enabled": False}, "torch": {"version": "2.13"}},
         ["torch==2.13.*", "torchvision", "torchaudio"], "13.0"),
        ("rtx3090", {"nunchaku": {"enabled": False}, "torch": {"version": "2.14.1"}},
         ["torch==2.14.1+cu128", "torchvision", "torchaudio"], "12.8"),
        ("nogpu", {"gpu": {"allow_cpu": True}, "torch": {"version": "2.12"}},
         ["torch==2.12.*", "torchvision", "torchaudio"], None),
        ("h100", {"torch": {"version": "2.13"}, "cuda": {"version": "12.8"}},
         ["torch==2.13.*", "torchvision", "torchaudio"], "12.8"),
    ],
)
def test_a_torch_the_catalog_does_not_know_is_accepted_with_a_warning(
    host: str, sections: dict[str, Any], requirements: list[str], cuda: str | None
) -> None:
    res = run(host, **sections)
    assert res.ok, render_resolution(res)
    assert res.torch is not None and res.torch.requirements == requirements and res.torch.cuda == cuda
    assert "not in the catalog" in res.torch.why
    assert any("is not in the catalog" in note for note in res.notes), res.notes


def test_an_unknown_torch_still_needs_a_cuda_build_the_driver_runs() -> None:
    res = run("rtx3090", nunchaku={"enabled": False}, torch={"version": "2.13"}, cuda={"version": "13.0"})
    field, reason, fix = only_violation(res)
    assert field == "host" and "driver 570.133.07 is too old" in reason and "580.65.06" in fix


def test_a_nunchaku_nightly_with_its_wheel_url_is_accepted() -> None:
    res = run("rtx4090", nunchaku={"version": NIGHTLY, "wheel_url": NIGHTLY_URL, "wheel_sha256": "b" * 64})
    assert res.ok, render_resolution(res)
    assert res.nunchaku is not None and (res.nunchaku.version, res.nunchaku.torch, res.nunchaku.cuda) == (
        NIGHTLY, "2.12", "13.0")
    assert res.nunchaku.urls == [NIGHTLY_URL] and res.nunchaku.sha256 == "b" * 64
    assert res.torch is not None and res.torch.requirements[0] == "torch==2.12.*" and res.torch.cuda == "13.0"
    assert res.plugin is not None and res.plugin.ref == "v1.2.1"
    assert any(f"nunchaku {NIGHTLY} is not in the catalog" in n and "not checked" in n for n in res.notes)
    auto = run("rtx4090", nunchaku={"wheel_url": NIGHTLY_URL})
    assert auto.ok and auto.nunchaku is not None and auto.nunchaku.version == NIGHTLY, render_resolution(auto)


@pytest.mark.parametrize(
    ("host", "sections", "field", "reason_part", "fix_part"),
    [
        ("rtx4090", {"nunchaku": {"version": NIGHTLY}}, "nunchaku.version",
         "so the URL of its wheel is unknown", "set nunchaku.wheel_url (and nunchaku.wheel_sha256)"),
        ("rtx4090", {"nunchaku": {"version": NIGHTLY, "wheel_url": NIGHTLY_URL.replace("cp312-cp312", "cp311-cp311")}},
         "nunchaku.wheel_url", "it is built for cp311, and python.version is cp312", "cp312-linux_x86_64"),
        ("rtx4090", {"nunchaku": {"version": NIGHTLY, "wheel_url": NIGHTLY_URL.replace("linux_x86_64", "win_amd64")}},
         "nunchaku.wheel_url", "built for win_amd64, and this host is linux_x86_64", "Point nunchaku.wheel_url"),
        ("rtx4090", {"nunchaku": {"version": "1.3.0.dev20260301", "wheel_url": NIGHTLY_URL}},
         "nunchaku.wheel_url", f"is nunchaku {NIGHTLY}", f"Set nunchaku.version to {NIGHTLY}"),
        ("rtx4090", {"nunchaku": {"version": NIGHTLY, "wheel_url": "https://mirror.example/nunchaku.whl"}},
         "nunchaku.wheel_url", "does not say which torch", "published name"),
        ("rtx3090", {"nunchaku": {"version": NIGHTLY, "wheel_url": NIGHTLY_URL}},
         "host", "driver 570.133.07 is too old", "Upgrade the NVIDIA driver to >= 580.65.06"),
        ("rtx4090", {"torch": {"version": "2.13"}}, "torch.version",
         "no wheel for torch 2.13", "set nunchaku.wheel_url to a nunchaku wheel built for torch 2.13"),
    ],
)
def test_outside_the_catalog_is_refused_only_where_it_cannot_work(
    host: str, sections: dict[str, Any], field: str, reason_part: str, fix_part: str
) -> None:
    res = run(host, **sections)
    matching = [v for v in res.violations if v.field == field]
    assert matching, render_resolution(res)
    assert reason_part in matching[0].reason, matching[0]
    assert fix_part in matching[0].fix, matching[0]


def _with_venv(host: str, torch: str, cuda: str | None, **packages: str) -> Facts:
    local = torch.partition("+")[2] or None
    venv = {"path": "/srv/provision/venv", "torch": {"version": torch, "cuda": cuda, "local": local},
            "nunchaku": None, "packages": {"torch": torch, **packages}}
    return Facts.model_validate({**facts(host).model_dump(), "venv": venv})


def test_torch_from_an_index_of_the_users_own_is_pinned_without_a_build_label() -> None:
    res = run("rtx4090", torch={"index_url": "http://pypi.internal/simple"})
    assert res.torch is not None and res.torch.requirements[0] == "torch==2.10.0", res.torch.requirements
    # Which build that index serves is unknown, so an installed build of that version is not "replaced".
    res = run(_with_venv("rtx4090", "2.10.0+cu128", "12.8"), torch={"index_url": "http://pypi.internal/simple"})
    assert not any("will be replaced" in n for n in res.notes), res.notes


def test_torch_on_a_platform_whose_wheels_carry_no_label_is_pinned_without_one() -> None:
    # download.pytorch.org's aarch64 wheels are not labelled like its x86_64 ones.
    res = run("aarch64", nunchaku={"enabled": False})
    assert res.platform == "linux_aarch64" and res.torch is not None, render_resolution(res)
    assert res.torch.requirements == ["torch==2.10.0", "torchvision==0.25.0", "torchaudio==2.10.0"]


def test_reports_compare_installed_torch_per_pep_440() -> None:
    same = run(_with_venv("rtx4090", "2.10.0+cu130", "13.0"))
    assert same.ok and not any("will be replaced" in n for n in same.notes), same.notes
    other_build = run(_with_venv("rtx4090", "2.10.0+cu128", "12.8"))
    assert any("torch 2.10.0+cu128 in /srv/provision/venv will be replaced by torch 2.10.0 (CUDA 13.0 build)" in n
               for n in other_build.notes), other_build.notes
    pypi = run(_with_venv("rtx4090", "2.10.0", None, **{"nvidia-cuda-runtime-cu12": "12.8.90"}))
    assert any("torch 2.10.0 (CUDA 12.8) in /srv/provision/venv will be replaced by torch 2.10.0 (CUDA 13.0 build)"
               in n for n in pypi.notes), pypi.notes
    pypi_same = run(_with_venv("rtx4090", "2.10.0", None, **{"nvidia-cuda-runtime": "13.0.96"}))
    assert not any("will be replaced" in n for n in pypi_same.notes), pypi_same.notes
    pinned = run(_with_venv("rtx4090", "2.13.0+cu130", "13.0"), nunchaku={"enabled": False}, torch={"version": "2.13"})
    assert pinned.ok, render_resolution(pinned)
    assert not any("will be replaced" in n for n in pinned.notes), "the venv already has the torch asked for"


def _with_nunchaku(version: str) -> Facts:
    base = _with_venv("rtx4090", "2.10.0+cu130", "13.0").model_dump()
    base["venv"]["nunchaku"] = {"version": version, "real": True}
    return Facts.model_validate(base)


def test_a_real_nunchaku_built_for_another_torch_is_reported_as_replaced() -> None:
    same = run(_with_nunchaku("1.2.1+cu13.0torch2.10"))
    assert same.ok and not any("nunchaku" in n and "will be replaced" in n for n in same.notes), same.notes
    other = run(_with_nunchaku("1.2.1+cu12.8torch2.9"))
    assert any("nunchaku 1.2.1+cu12.8torch2.9 in /srv/provision/venv will be replaced by 1.2.1+cu13.0torch2.10" in n
               for n in other.notes), other.notes


# --- an adopted venv's torch is never swapped silently -------------------------------------------------

ADOPT = {"version": "3.12", "adopt": "/srv/provision/venv"}


def test_adopting_a_venv_with_a_torch_nunchaku_has_no_wheel_for_is_refused_with_the_choices() -> None:
    res = run(_with_venv("rtx4090", "2.13.0+cu130", "13.0"), python=ADOPT)
    field, reason, fix = only_violation(res)
    assert field == "python.adopt"
    assert "has torch 2.13.0+cu130" in reason and "replace it with torch 2.10.0 (CUDA 13.0 build)" in reason
    assert "Set torch.version: 2.13 to keep the adopted torch" in fix and "remove python.adopt" in fix


def test_an_adopted_torch_the_catalog_does_not_know_is_kept_in_plain_mode() -> None:
    host = _with_venv("rtx4090", "2.13.0+cu130", "13.0", torchvision="0.28.0+cu130")
    res = run(host, python=ADOPT, nunchaku={"enabled": False})
    assert res.ok, render_resolution(res)
    assert res.torch is not None and res.torch.requirements == ["torch==2.13.0", "torchvision==0.28.0", "torchaudio"]
    assert "adopted venv" in res.torch.why and not any("will be replaced" in n for n in res.notes)


def test_an_adopted_torch_keeps_its_exact_patch_release() -> None:
    res = run(_with_venv("rtx4090", "2.9.0+cu130", "13.0", torchvision="0.24.0+cu130", torchaudio="2.9.0+cu130"),
              python=ADOPT)
    assert res.ok, render_resolution(res)
    assert res.nunchaku is not None and res.nunchaku.filename.startswith("nunchaku-1.2.1+cu13.0torch2.9-")
    assert res.torch is not None and res.torch.requirements == ["torch==2.9.0", "torchvision==0.24.0",
                                                                "torchaudio==2.9.0"]


def test_an_explicit_torch_pin_replaces_the_adopted_one_and_says_so() -> None:
    res = run(_with_venv("rtx4090", "2.13.0+cu130", "13.0"), python=ADOPT, torch={"version": "2.10"})
    assert res.ok, render_resolution(res)
    assert any("torch 2.13.0+cu130 in /srv/provision/venv will be replaced by torch 2.10.0" in n for n in res.notes)


@pytest.mark.parametrize("sections", [{}, {"gpu": {"allow_cpu": True}}, {"nunchaku": {"enabled": False}}])
def test_facts_from_a_mac_are_refused_with_the_reason(sections: dict[str, Any]) -> None:
    res = run("darwin", **sections)
    matching = [v for v in res.violations if v.field == "host"]
    assert matching, render_resolution(res)
    assert "Darwin host (arm64)" in matching[0].reason and "Linux builds only" in matching[0].reason
    assert "Linux x86_64 host" in matching[0].fix
    assert res.torch is None and res.platform is None


def test_facts_from_windows_are_refused_not_given_a_linux_wheel() -> None:
    windows = facts("rtx4090", system="Windows", arch="AMD64")
    res = run(windows)
    field, reason, _ = only_violation(res)
    assert field == "host" and "Windows host (AMD64)" in reason
    assert res.nunchaku is None


def test_live_linux_facts_carry_the_system() -> None:
    assert facts("rtx4090").system is None, "older facts files have no system and are taken as Linux"
    assert run(facts("rtx4090", system="Linux")).ok


# --- plugin settings from the host and the manifest ----------------------------------------------------


def _settings(res: Resolution) -> dict[str, tuple[object, str]]:
    assert res.plugin is not None, render_resolution(res)
    return {s.name: (s.value, s.source) for s in res.plugin.settings}


def _vram(host: str, mib: int) -> Facts:
    loaded = facts(host)
    gpus = [loaded.nvidia.gpus[0].model_copy(update={"memory_total_mib": mib})]
    return loaded.model_copy(update={"nvidia": loaded.nvidia.model_copy(update={"gpus": gpus})})


@pytest.mark.parametrize(
    ("host", "models", "expected"),
    [
        ("rtx4090", [FLUX], {"cpu_offload": "disable", "data_type": "bfloat16", "attention": "flash-attention2"}),
        ("t4", [FLUX], {"cpu_offload": "disable", "data_type": "float16", "attention": "nunchaku-fp16"}),
        (_vram("rtx3090", 12288), [FLUX], {"cpu_offload": "enable"}),
        # 14.5 GiB: above the FLUX loader's 14 GiB threshold, below the Qwen-Image loader's 15 GiB.
        (_vram("rtx3090", 14848), [FLUX], {"cpu_offload": "disable"}),
        (_vram("rtx3090", 14848), [QWEN], {"cpu_offload": "enable"}),
    ],
)
def test_host_dependent_plugin_settings(host: str | Facts, models: list[dict[str, Any]],
                                        expected: dict[str, str]) -> None:
    res = run(host, models=models)
    assert res.ok, render_resolution(res)
    chosen = _settings(res)
    for name, value in expected.items():
        assert chosen[name] == (value, "host"), (name, chosen)
    assert res.plugin is not None and all(s.why for s in res.plugin.settings)


def test_manifest_settings_override_the_host_and_show_in_text_and_json() -> None:
    plugin = dict(PLUGIN, settings={"cpu_offload": "enable", "cache_threshold": 0.12, "num_blocks_on_gpu": 4})
    res = run("rtx4090", comfyui={"plugins": [plugin]})
    assert res.ok, render_resolution(res)
    chosen = _settings(res)
    assert chosen["cpu_offload"] == ("enable", "manifest") and chosen["data_type"] == ("bfloat16", "host")
    assert chosen["cache_threshold"] == (0.12, "manifest") and chosen["num_blocks_on_gpu"] == (4, "manifest")
    text = render_resolution(res)
    assert "cpu_offload: enable (set by comfyui.plugins[0].settings.cpu_offload (the host would get disable))" in text
    data = json.loads(json.dumps(res.model_dump(mode="json")))
    assert {"name": "attention", "value": "flash-attention2", "source": "host"}.items() <= next(
        s for s in data["plugin"]["settings"] if s["name"] == "attention").items()


@pytest.mark.parametrize(
    ("host", "settings", "field", "reason_part", "fix_part"),
    [
        ("rtx4090", {"cpu_offlaod": "enable"}, "comfyui.plugins[0].settings.cpu_offlaod",
         "loaders take no input named 'cpu_offlaod'", "cpu_offload"),
        ("rtx4090", {"cpu_offload": True}, "comfyui.plugins[0].settings.cpu_offload",
         "True is not a value", "one of: auto, enable, disable"),
        ("t4", {"attention": "flash-attention2"}, "comfyui.plugins[0].settings.attention",
         "accepts on Turing", "one of: nunchaku-fp16"),
        ("rtx4090", {"data_type": "fp8"}, "comfyui.plugins[0].settings.data_type",
         "'fp8' is not a value", "bfloat16, float16"),
        ("rtx4090", {"cache_threshold": 2}, "comfyui.plugins[0].settings.cache_threshold",
         "must be a number from 0 to 1, not 2", "a number from 0 to 1"),
        ("rtx4090", {"num_blocks_on_gpu": 2.5}, "comfyui.plugins[0].settings.num_blocks_on_gpu",
         "must be a whole number", "from 1 to 60"),
        ("h100", {"cpu_offload": "sometimes"}, "comfyui.plugins[0].settings.cpu_offload",
         "'sometimes' is not a value", "auto, enable, disable"),
    ],
)
def test_bad_plugin_settings_name_the_field(host: str, settings: dict[str, Any], field: str, reason_part: str,
                                            fix_part: str) -> None:
    res = run(host, comfyui={"plugins": [dict(PLUGIN, settings=settings)]})
    matching = [v for v in res.violations if v.field == field]
    assert matching, render_resolution(res)
    assert reason_part in matching[0].reason and fix_part in matching[0].fix, matching[0]


def test_a_setting_newer_than_the_pinned_plugin_is_refused() -> None:
    res = run("rtx4090", nunchaku={"version": "0.1.4"}, python={"version": "3.11"}, models=[],
              comfyui={"plugins": [dict(PLUGIN, ref="v0.1.6", settings={"attention": "nunchaku-fp16"})]})
    field, reason, fix = only_violation(res)
    assert field == "comfyui.plugins[0].settings.attention" and "arrived in ComfyUI-nunchaku 0.2.0" in reason
    assert "v0.2.0 or newer" in fix


# --- a fix that needs more than one field ---------------------------------------------------------------


def test_when_no_single_field_fixes_it_the_fix_names_the_combination() -> None:
    res = run("rtx4090", models=[dict(ZIMAGE, rank=32)], nunchaku={"version": "1.0.1"}, torch={"version": "2.6"})
    field, reason, fix = only_violation(res)
    assert field == "nunchaku.version" and "NunchakuZImageDiTLoader needs nunchaku >= 1.1.0" in reason
    assert fix == "No single setting fixes this, but together they do: set nunchaku.version to 1.2.1 and " \
                  "torch.version to 2.10"
    fixed = run("rtx4090", models=[dict(ZIMAGE, rank=32)], nunchaku={"version": "1.2.1"}, torch={"version": "2.10"})
    assert fixed.ok, render_resolution(fixed)


def test_a_single_field_fix_is_still_preferred() -> None:
    res = run("rtx4090", models=[dict(ZIMAGE, rank=32)], nunchaku={"version": "1.0.2"})
    _, _, fix = only_violation(res)
    assert fix == "Set nunchaku.version to 1.2.1 (or 1.2.0, 1.1.0)"


# --- catalog corrections as the resolver applies them ---------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "field", "reason_part"),
    [
        ({"python": {"version": "3.11"}, "nunchaku": {"version": "0.1.3"}, "models": [],
          "comfyui": {"plugins": [dict(PLUGIN, ref="v0.1.6")]}},
         "comfyui.plugins[0].ref", "0.1.6 needs nunchaku >=0.1.4,<0.2.0"),
        ({"python": {"version": "3.13"}, "comfyui": {"plugins": [dict(PLUGIN, ref="v1.0.1")]}},
         "python.version", "ComfyUI-nunchaku 1.0.1 does not support Python 3.13"),
        ({"models": [QWEN], "comfyui": {"ref": "v0.23.0", "plugins": [PLUGIN]}},
         "comfyui.ref", "NunchakuQwenImageDiTLoader in ComfyUI-nunchaku 1.2.0, 1.2.1 needs ComfyUI >=0.7.0,<0.23.0"),
        ({"models": [QWEN], "comfyui": {"ref": "v0.3.48", "plugins": [dict(PLUGIN, ref="v1.1.0")]}},
         "comfyui.ref", "needs ComfyUI >=0.3.49,<0.7.0"),
        ({"models": [dict(ZIMAGE, rank=32)], "comfyui": {"ref": "v0.28.0", "plugins": [dict(PLUGIN, ref="v1.2.1")]}},
         "comfyui.ref", "NunchakuZImageDiTLoader in ComfyUI-nunchaku 1.2.1 needs ComfyUI >=0.7.0,<0.28.0"),
    ],
)
def test_catalog_corrections_refuse_what_the_real_code_cannot_run(sections: dict[str, Any], field: str,
                                                                  reason_part: str) -> None:
    res = run("rtx4090", **sections)
    matching = [v for v in res.violations if v.field == field]
    assert matching, render_resolution(res)
    assert reason_part in matching[0].reason, matching[0]


def test_zimage_on_comfyui_028_gets_the_plugin_without_the_patcher() -> None:
    res = run("rtx4090", models=[dict(ZIMAGE, rank=32)], comfyui={"ref": "v0.28.0", "plugins": [PLUGIN]})
    assert res.ok, render_resolution(res)
    assert res.plugin is not None and res.plugin.ref == "v1.1.0"
    assert res.comfyui is not None and "only from issues" in res.comfyui.why


def test_the_old_plugin_org_still_resolves_under_its_new_name() -> None:
    old = {"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-tech/ComfyUI-nunchaku"}
    res = run("rtx3090", comfyui={"ref": "v0.7.0", "plugins": [dict(old, ref="v1.2.1")]})
    assert res.ok, render_resolution(res)
    assert res.plugin is not None and res.plugin.repo == "https://github.com/nunchaku-ai/ComfyUI-nunchaku"
    assert any("is an old name of https://github.com/nunchaku-ai/ComfyUI-nunchaku" in n for n in res.notes)
    unknown = run("rtx3090", comfyui={"plugins": [dict(old, repo="https://example.org/me/ComfyUI-nunchaku")]})
    assert unknown.plugin is not None and unknown.plugin.repo == "https://example.org/me/ComfyUI-nunchaku"


def test_plugin_100_warns_on_any_backend_but_100() -> None:
    res = run("rtx4090", nunchaku={"version": "1.0.1"}, comfyui={"plugins": [dict(PLUGIN, ref="v1.0.1")]})
    assert res.ok, render_resolution(res)
    assert any("logs a warning" in n and "only nunchaku 1.0.0" in n for n in res.notes), res.notes


def test_bad_plugin_settings_are_reported_with_the_other_refusals() -> None:
    res = run("rtx4090", python={"version": "3.14"}, comfyui={"plugins": [dict(PLUGIN, settings={"speed": "max"})]})
    assert {"python.version", "comfyui.plugins[0].settings.speed"} <= {v.field for v in res.violations}
