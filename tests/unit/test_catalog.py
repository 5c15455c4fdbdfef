"""The packaged catalog: it loads, is internally consistent, and answers lookups from real entries."""

from __future__ import annotations

import pytest

from provisioner.catalog import Catalog, arch_number, load_catalog, parse_version, specifier, version_key


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_load_is_cached(catalog: Catalog) -> None:
    assert load_catalog() is catalog


def test_every_build_has_a_torch_release_with_its_cuda(catalog: Catalog) -> None:
    for release in catalog.nunchaku.releases:
        for build in release.builds:
            torch = catalog.torch_release(build.torch)
            assert torch is not None, (release.version, build.torch)
            assert build.cuda in torch.cuda, (release.version, build.torch, build.cuda)


def test_every_version_and_range_parses(catalog: Catalog) -> None:
    for release in catalog.nunchaku.releases:
        version_key(release.version)
    for plugin in catalog.plugin.releases:
        version_key(plugin.version)
        specifier(plugin.backend)
        for minimum in plugin.node_backend.values():
            version_key(minimum)
    for torch in catalog.torch.releases:
        assert torch.torch.startswith(torch.minor + ".")


def test_releases_are_listed_newest_first(catalog: Catalog) -> None:
    versions = [r.version for r in catalog.nunchaku_releases()]
    assert versions[0] == "1.2.1"
    assert versions == sorted(versions, key=version_key, reverse=True)
    assert catalog.plugin_releases()[0].version == "1.2.1"
    assert next(r.version for r in catalog.comfyui_releases() if not r.uncertain) == "0.7.0"
    assert catalog.comfyui_releases()[0].version == "0.38.0" and not catalog.comfyui_confirmed("0.38.0")


@pytest.mark.parametrize(
    ("version", "torch", "cuda", "python", "expected"),
    [
        ("0.1.3", "2.6", "12.4", "cp311", "nunchaku-0.1.3+torch2.6-cp311-cp311-linux_x86_64.whl"),
        ("0.3.1", "2.5", "12.4", "cp312", "nunchaku-0.3.1+torch2.5-cp312-cp312-linux_x86_64.whl"),
        ("1.0.1", "2.8", "12.8", "cp312", "nunchaku-1.0.1+torch2.8-cp312-cp312-linux_x86_64.whl"),
        ("1.2.0", "2.9", "13.0", "cp313", "nunchaku-1.2.0+torch2.9-cp313-cp313-linux_x86_64.whl"),
        ("1.2.1", "2.10", "13.0", "cp312", "nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl"),
        ("1.2.1", "2.9", "12.8", "cp310", "nunchaku-1.2.1+cu12.8torch2.9-cp310-cp310-linux_x86_64.whl"),
    ],
)
def test_wheel_filename_eras(catalog: Catalog, version: str, torch: str, cuda: str, python: str, expected: str) -> None:
    release = catalog.nunchaku_release(version)
    assert release is not None
    build = next(b for b in release.builds if b.torch == torch and b.cuda == cuda)
    assert catalog.wheel_filename(release, build, python, "linux_x86_64") == expected


@pytest.mark.parametrize(
    ("version", "expected_prefixes"),
    [
        (
            "0.3.1",
            [
                "https://github.com/nunchaku-ai/nunchaku/releases/download/v0.3.1/",
                "https://github.com/mit-han-lab/nunchaku/releases/download/v0.3.1/",
                "https://huggingface.co/mit-han-lab/nunchaku/resolve/main/",
                "https://modelscope.cn/models/nunchaku-tech/nunchaku/resolve/master/",
            ],
        ),
        (
            "1.0.1",
            [
                "https://github.com/nunchaku-ai/nunchaku/releases/download/v1.0.1/",
                "https://github.com/nunchaku-tech/nunchaku/releases/download/v1.0.1/",
                "https://huggingface.co/nunchaku-tech/nunchaku/resolve/main/",
                "https://modelscope.cn/models/nunchaku-tech/nunchaku/resolve/master/",
            ],
        ),
        (
            "1.1.0",
            [
                "https://github.com/nunchaku-ai/nunchaku/releases/download/v1.1.0/",
                "https://github.com/nunchaku-tech/nunchaku/releases/download/v1.1.0/",
            ],
        ),
        ("1.2.1", ["https://github.com/nunchaku-ai/nunchaku/releases/download/v1.2.1/"]),
        ("0.1.3", ["https://huggingface.co/mit-han-lab/nunchaku/resolve/main/"]),
    ],
)
def test_wheel_urls_follow_the_org_history(catalog: Catalog, version: str, expected_prefixes: list[str]) -> None:
    release = catalog.nunchaku_release(version)
    assert release is not None
    urls = catalog.wheel_urls(release, "WHEEL.whl")
    assert urls == [prefix + "WHEEL.whl" for prefix in expected_prefixes]


@pytest.mark.parametrize(
    ("version", "torch", "present"),
    [
        ("1.0.1", "2.9", False),  # the 2.9 slot was built on a nightly named 2.10 (issue NK#764)
        ("1.0.1", "2.10", True),
        ("1.0.2", "2.9", True),
        ("1.0.2", "2.6", False),
        ("1.1.0", "2.6", False),
        ("1.2.1", "2.7", False),
        ("1.2.1", "2.8", True),
        ("0.1.4", "2.7", False),
    ],
)
def test_which_torch_versions_have_wheels(catalog: Catalog, version: str, torch: str, present: bool) -> None:
    release = catalog.nunchaku_release(version)
    assert release is not None
    assert any(b.torch == torch for b in release.builds) is present


@pytest.mark.parametrize(
    ("version", "torch", "nightly"),
    [
        ("1.0.1", "2.10", True),
        ("1.0.2", "2.10", True),
        ("1.0.2", "2.9", False),
        ("0.2.0", "2.7", True),
        ("0.3.0", "2.7", False),
        ("1.2.1", "2.11", True),
    ],
)
def test_nightly_flags(catalog: Catalog, version: str, torch: str, nightly: bool) -> None:
    release = catalog.nunchaku_release(version)
    assert release is not None
    assert all(b.nightly is nightly for b in release.builds if b.torch == torch)


@pytest.mark.parametrize(
    ("version", "cuda", "arch", "present"),
    [
        ("1.2.1", "12.8", "sm_120", True),
        ("1.2.1", "13.0", "sm_121", True),
        ("1.2.1", "12.8", "sm_121", False),
        ("1.0.1", "12.4", "sm_120", False),
        ("1.0.1", "12.4", "sm_75", True),
        ("0.1.4", "12.4", "sm_75", False),
        ("1.2.1", "12.8", "sm_90", False),
    ],
)
def test_arch_targets_per_build(catalog: Catalog, version: str, cuda: str, arch: str, present: bool) -> None:
    release = catalog.nunchaku_release(version)
    assert release is not None
    build = next(b for b in release.builds if b.cuda == cuda)
    assert (arch in catalog.build_archs(release, build)) is present


@pytest.mark.parametrize(
    ("arch", "precision", "dtype", "fallback", "min_build_cuda"),
    [
        ("sm_75", "int4", "float16", None, None),
        ("sm_80", "int4", "bfloat16", None, None),
        ("sm_86", "int4", "bfloat16", None, None),
        ("sm_89", "int4", "bfloat16", None, None),
        ("sm_120", "fp4", "bfloat16", None, "12.8"),
        ("sm_120a", "fp4", "bfloat16", None, "12.8"),
        ("sm_121", "fp4", "bfloat16", None, "13.0"),
        ("sm_90", None, "bfloat16", "fp8", None),
        ("sm_100", None, "bfloat16", "fp8", None),
        ("sm_70", None, "bfloat16", None, None),
        ("sm_61", None, "bfloat16", None, None),
    ],
)
def test_arch_table(
    catalog: Catalog, arch: str, precision: str | None, dtype: str, fallback: str | None, min_build_cuda: str | None
) -> None:
    info = catalog.arch(arch)
    assert info is not None
    assert info.precision == precision
    assert info.dtype == dtype
    assert info.fallback == fallback
    assert info.min_build_cuda == min_build_cuda
    assert info.supported is (precision is not None)
    if not info.supported:
        assert info.reason


def test_turing_has_no_bf16(catalog: Catalog) -> None:
    info = catalog.arch("sm_75")
    assert info is not None and info.bf16 is False and info.tflops_dtype == "float16"


@pytest.mark.parametrize(
    ("name", "model", "arch"),
    [
        ("NVIDIA GeForce RTX 3090", "GeForce RTX 3090", "sm_86"),
        ("NVIDIA GeForce RTX 3090 Ti", "GeForce RTX 3090 Ti", "sm_86"),
        ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090", "sm_89"),
        ("NVIDIA GeForce RTX 5090", "GeForce RTX 5090", "sm_120"),
        ("NVIDIA A100-SXM4-80GB", "A100 80GB", "sm_80"),
        ("NVIDIA A100-PCIE-40GB", "A100", "sm_80"),
        ("Tesla T4", "Tesla T4", "sm_75"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM", "sm_90"),
        ("NVIDIA H100 PCIe", "H100", "sm_90"),
        ("NVIDIA H200", "H200", "sm_90"),
        ("NVIDIA B200", "B200", "sm_100"),
        ("NVIDIA L4", "L4", "sm_89"),
        ("NVIDIA L40S", "L40S", "sm_89"),
    ],
)
def test_gpu_names(catalog: Catalog, name: str, model: str, arch: str) -> None:
    gpu = catalog.gpu_model(name)
    assert gpu is not None
    assert (gpu.name, gpu.arch) == (model, arch)


def test_unknown_gpu_name(catalog: Catalog) -> None:
    assert catalog.gpu_model("NVIDIA GeForce GTX 1080") is None


@pytest.mark.parametrize(
    ("arch", "name", "floor"),
    [
        ("sm_89", "NVIDIA GeForce RTX 4090", 66.1),
        ("sm_86", "NVIDIA GeForce RTX 3090", 28.4),
        ("sm_80", "NVIDIA A100-SXM4-80GB", 124.8),
        ("sm_75", "Tesla T4", 26.0),
        ("sm_86", None, 10.0),
        ("sm_89", "Some Future Ada Card", 12.0),
        ("sm_86", "NVIDIA GeForce RTX 4090", 10.0),  # name and arch disagree: use the arch floor
    ],
)
def test_tflops_floor(catalog: Catalog, arch: str, name: str | None, floor: float) -> None:
    assert catalog.tflops_floor(arch, name) == pytest.approx(floor)


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [
        ("11.8", "520.61.05"),
        ("12.4", "550.54.14"),
        ("12.6", "560.28.03"),
        ("12.8", "570.26"),
        ("12.9", "575.51.03"),
        ("13.0", "580.65.06"),
        ("14.0", None),
    ],
)
def test_driver_floors(catalog: Catalog, cuda: str, driver: str | None) -> None:
    assert catalog.driver_floor(cuda) == driver


@pytest.mark.parametrize(
    ("cuda", "url"),
    [
        ("12.4", "https://download.pytorch.org/whl/cu124"),
        ("12.8", "https://download.pytorch.org/whl/cu128"),
        ("13.0", "https://download.pytorch.org/whl/cu130"),
        (None, "https://download.pytorch.org/whl/cpu"),
    ],
)
def test_torch_index_url(catalog: Catalog, cuda: str | None, url: str) -> None:
    assert catalog.torch_index_url(cuda) == url


@pytest.mark.parametrize(
    ("minor", "torch", "vision", "audio"),
    [
        ("2.5", "2.5.1", "0.20.1", "2.5.1"),
        ("2.6", "2.6.0", "0.21.0", "2.6.0"),
        ("2.7", "2.7.1", "0.22.1", "2.7.1"),
        ("2.8", "2.8.0", "0.23.0", "2.8.0"),
        ("2.9", "2.9.1", "0.24.1", "2.9.1"),
        ("2.10", "2.10.0", "0.25.0", "2.10.0"),
    ],
)
def test_torch_pins(catalog: Catalog, minor: str, torch: str, vision: str, audio: str) -> None:
    release = catalog.torch_release(minor)
    assert release is not None
    assert (release.torch, release.torchvision, release.torchaudio) == (torch, vision, audio)


@pytest.mark.parametrize(
    ("version", "node", "present"),
    [
        ("0.1.6", "SVDQuantFluxDiTLoader", True),
        ("0.2.0", "SVDQuantFluxDiTLoader", False),
        ("0.2.0", "NunchakuFluxDiTLoader", True),
        ("0.3.0", "NunchakuTextEncoderLoaderV2", True),
        ("0.3.4", "NunchakuQwenImageDiTLoader", False),
        ("1.0.0", "NunchakuQwenImageDiTLoader", True),
        ("1.0.2", "NunchakuZImageDiTLoader", False),
        ("1.1.0", "NunchakuZImageDiTLoader", True),
        ("1.2.1", "NunchakuFluxDiTLoader", True),
    ],
)
def test_plugin_nodes_accumulate(catalog: Catalog, version: str, node: str, present: bool) -> None:
    release = catalog.plugin_release(version)
    assert release is not None
    assert (node in catalog.plugin_nodes(release)) is present


@pytest.mark.parametrize(
    ("plugin", "backend", "ok"),
    [
        ("0.3.2", "0.3.1", True),
        ("0.3.2", "0.3.2", False),
        ("0.3.4", "0.3.2", True),
        ("1.0.0", "0.3.2", False),
        ("1.2.1", "1.0.1", True),
        ("0.2.0", "0.2.0", True),
        ("0.3.1", "0.3.0", True),
        # v0.1.6 imports nunchaku.lora.flux names that nunchaku 0.1.3 does not export (no try around them).
        ("0.1.6", "0.1.3", False),
        ("0.1.6", "0.1.4", True),
        # The newer symbols v1.1.0+ import sit inside the Z-Image node's own try: the plugin loads on 1.0.x.
        ("1.1.0", "1.0.2", True),
        ("1.2.0", "1.0.0", True),
    ],
)
def test_plugin_backend_ranges(catalog: Catalog, plugin: str, backend: str, ok: bool) -> None:
    release = catalog.plugin_release(plugin)
    assert release is not None
    assert (version_key(backend) in specifier(release.backend)) is ok


def test_qwen_loader_needs_comfyui_07_from_plugin_120(catalog: Catalog) -> None:
    for version in ("1.2.0", "1.2.1"):
        release = catalog.plugin_release(version)
        assert release is not None
        rule = release.node_comfyui["NunchakuQwenImageDiTLoader"]
        assert version_key("0.7.0") in specifier(rule.versions)
        assert version_key("0.3.64") not in specifier(rule.versions)


@pytest.mark.parametrize(
    ("plugin", "python", "ok"),
    [("0.1.6", "3.12", True), ("0.1.6", "3.13", False), ("1.0.1", "3.13", False), ("1.0.2", "3.13", True),
     ("1.2.1", "3.13", True), ("1.2.1", "3.14", False), ("0.3.4", "3.9", False)],
)
def test_every_plugin_tag_declares_its_python(catalog: Catalog, plugin: str, python: str, ok: bool) -> None:
    assert all(r.requires_python for r in catalog.plugin.releases)
    release = catalog.plugin_release(plugin)
    assert release is not None and release.requires_python is not None
    assert (version_key(python) in specifier(release.requires_python)) is ok


@pytest.mark.parametrize(
    ("plugin", "node", "comfyui", "ok"),
    [
        ("1.0.0", "NunchakuQwenImageDiTLoader", "0.3.48", False),
        ("1.1.0", "NunchakuQwenImageDiTLoader", "0.3.49", True),
        ("1.2.1", "NunchakuQwenImageDiTLoader", "0.7.0", True),
        ("1.2.1", "NunchakuQwenImageDiTLoader", "0.23.0", False),
        ("1.2.0", "NunchakuQwenImageDiTLoader", "0.23.0", False),
        ("1.2.1", "NunchakuZImageDiTLoader", "0.23.0", True),
        ("1.2.1", "NunchakuZImageDiTLoader", "0.28.0", False),
        ("1.1.0", "NunchakuZImageDiTLoader", "0.28.0", True),
    ],
)
def test_node_comfyui_ranges(catalog: Catalog, plugin: str, node: str, comfyui: str, ok: bool) -> None:
    release = catalog.plugin_release(plugin)
    assert release is not None
    assert (version_key(comfyui) in specifier(release.node_comfyui[node].versions)) is ok


def test_comfyui_releases_from_issues_are_marked_uncertain(catalog: Catalog) -> None:
    assert catalog.comfyui.repo == "https://github.com/Comfy-Org/ComfyUI"
    for version in ("0.23.0", "0.28.0", "0.38.0"):
        assert not catalog.comfyui_confirmed(version)
    for version in ("0.3.49", "0.3.64", "0.7.0"):
        assert catalog.comfyui_confirmed(version)
    assert all(r.source for r in catalog.comfyui.releases)


@pytest.mark.parametrize(
    ("repo", "current"),
    [
        ("https://github.com/nunchaku-tech/ComfyUI-nunchaku", "https://github.com/nunchaku-ai/ComfyUI-nunchaku"),
        ("https://github.com/mit-han-lab/ComfyUI-nunchaku.git/", "https://github.com/nunchaku-ai/ComfyUI-nunchaku"),
        ("https://github.com/nunchaku-ai/ComfyUI-nunchaku", None),
        ("https://example.org/fork/ComfyUI-nunchaku", None),
    ],
)
def test_old_plugin_names_map_to_the_newest_confirmed_one(catalog: Catalog, repo: str, current: str | None) -> None:
    assert catalog.current_plugin_repo(repo) == current


def test_plugin_settings_are_sourced_and_cover_the_host_dependent_ones(catalog: Catalog) -> None:
    names = {s.name for s in catalog.plugin.settings}
    assert {"cpu_offload", "data_type", "attention"} <= names
    offload = catalog.plugin_setting("cpu_offload")
    assert offload is not None and offload.offload_below_mib == {
        "NunchakuFluxDiTLoader": 14336, "NunchakuQwenImageDiTLoader": 15360}
    for setting in catalog.plugin.settings:
        assert setting.source and (setting.values or setting.maximum is not None)
        assert set(setting.nodes) <= set(catalog.plugin_nodes(catalog.plugin_releases()[0]))


def test_nunchaku_121_has_torch_211_wheels_built_on_a_nightly(catalog: Catalog) -> None:
    release = catalog.nunchaku_release("1.2.1")
    assert release is not None
    builds = {(b.torch, b.cuda): b for b in release.builds}
    assert builds[("2.11", "12.8")].nightly and builds[("2.11", "13.0")].nightly
    assert not builds[("2.11", "13.0")].uncertain


@pytest.mark.parametrize(
    ("name", "repo", "ok"),
    [
        ("ComfyUI-nunchaku", "https://github.com/nunchaku-ai/ComfyUI-nunchaku", True),
        ("nodes", "https://github.com/mit-han-lab/ComfyUI-nunchaku.git", True),
        ("comfyui_nunchaku", "https://example.com/fork", True),
        ("ComfyUI-Manager", "https://github.com/ltdrdata/ComfyUI-Manager", False),
    ],
)
def test_plugin_detection(catalog: Catalog, name: str, repo: str, ok: bool) -> None:
    assert catalog.is_nunchaku_plugin(name, repo) is ok


@pytest.mark.parametrize(
    ("repo", "ok"),
    [
        ("nunchaku-tech/nunchaku-flux.1-dev", True),
        ("nunchaku-ai/nunchaku-flux.1-dev", True),
        ("mit-han-lab/nunchaku-flux.1-dev", True),
        ("someone/nunchaku-flux.1-dev", False),
        ("nunchaku-tech/nunchaku-flux.1-schnell", False),
    ],
)
def test_model_repo_aliases(catalog: Catalog, repo: str, ok: bool) -> None:
    assert catalog.same_model_repo("nunchaku-tech/nunchaku-flux.1-dev", repo) is ok


def test_model_entries_cover_the_required_models(catalog: Catalog) -> None:
    ids = {entry.id for entry in catalog.model_entries()}
    assert {
        "flux.1-dev",
        "flux.1-schnell",
        "flux.1-kontext-dev",
        "qwen-image",
        "qwen-image-edit-2509",
        "t5xxl-awq",
    } <= ids
    for entry in catalog.model_entries():
        if entry.id != "z-image-turbo":
            assert entry.fallback is not None, entry.id
        for precision, ranks in entry.ranks.items():
            for rank in ranks:
                if entry.sizes:
                    assert entry.size(precision, rank) is not None, (entry.id, precision, rank)


def test_model_sizes(catalog: Catalog) -> None:
    by_id = {entry.id: entry for entry in catalog.model_entries()}
    assert by_id["qwen-image-edit-2509"].size("fp4", 128) == 13_100_000_000
    assert by_id["t5xxl-awq"].size(None, None) == 2_990_000_000
    fallback = by_id["flux.1-kontext-dev"].fallback
    assert fallback is not None and fallback.size == 11_904_640_136


@pytest.mark.parametrize(("text", "number"), [("sm_86", 86), ("sm_120a", 120), ("sm_75", 75), ("gfx90a", None)])
def test_arch_number(text: str, number: int | None) -> None:
    assert arch_number(text) == number


@pytest.mark.parametrize(("text", "ok"), [("v1.2.1", True), ("1.0.0.dev20250816", True), ("main", False)])
def test_parse_version(text: str, ok: bool) -> None:
    assert (parse_version(text) is not None) is ok
