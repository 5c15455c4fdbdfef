"""Source builds in the resolver: when `nunchaku.build` builds, for which archs, against which torch, what the
host must have, the build key, and the unsupported-arch override on Hopper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.catalog import load_catalog
from provisioner.facts import Compiler, Facts, Toolchain, load_facts
from provisioner.manifest.model import Manifest
from provisioner.resolve import Resolution, render_resolution, resolve
from provisioner.resolve.result import SourceBuildChoice
from provisioner.resolve.source_build import build_key

FACTS = Path(__file__).parent / "facts"
PLUGIN = {"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku"}
OVERRIDE_WARNING = ("unsupported-arch override: sm_90 is not in nunchaku's list; built for diagnostics; Hopper runs "
                    "INT4 MMA emulated: correct but slower than BF16")
NVCC_13 = Compiler(path="/usr/local/cuda/bin/nvcc", release="13.0", version="13.0.88")
GCC_13 = Compiler(path="/usr/bin/gcc", version="13.3.0")


def facts(name: str, toolchain: Toolchain | None = None, **changes: Any) -> Facts:
    loaded = load_facts(FACTS / f"{name}.json")
    if toolchain is not None:
        changes["toolchain"] = toolchain
    return loaded.model_copy(update=changes) if changes else loaded


def toolchain(nvcc: Compiler | None = NVCC_13, gcc: Compiler | None = GCC_13, **changes: Any) -> Toolchain:
    return Toolchain(cpu_count=16, nvcc=nvcc, cuda_home="/usr/local/cuda", gcc=gcc, **changes)


def run(host: Facts, **sections: Any) -> Resolution:
    data: dict[str, Any] = {"name": "test", "comfyui": {"plugins": [PLUGIN]}}
    data.update(sections)
    return resolve(Manifest.model_validate(data), host, load_catalog())


def built(res: Resolution) -> SourceBuildChoice:
    assert res.ok, render_resolution(res)
    assert res.nunchaku is not None and res.nunchaku.build is not None, render_resolution(res)
    return res.nunchaku.build


def problems(res: Resolution) -> str:
    assert not res.ok, render_resolution(res)
    return "\n".join(f"[{v.field}] {v.reason} | fix: {v.fix}" for v in res.violations)


# --- when a build happens ----------------------------------------------------------------------


def test_an_aarch64_gb10_builds_for_121a_with_the_release_pins() -> None:
    res = run(facts("dgx-spark"), gpu={"arch": "sm_121"}, nunchaku={"precision": "fp4"})
    build = built(res)
    assert res.platform == "linux_aarch64" and res.gpu is not None and res.gpu.precision == "fp4"
    assert build.arches == ["121a"] and build.install_mode == "FAST" and build.add_supported_arches == []
    assert build.version == "1.2.1" and build.ref == "v1.2.1"
    assert build.commit == "af49f24911b49147c074ed96c324fb66884d1f87"
    assert [s.path.rsplit("/", 1)[1] for s in build.submodules] == [
        "cutlass", "json", "mio", "spdlog", "Block-Sparse-Attention"]
    assert all(s.commit and len(s.commit) == 40 for s in build.submodules)
    assert build.cuda == "13.0" and build.prerequisites.nvcc_major == "13"
    assert build.predicted_jobs == 20 and build.max_jobs is None
    assert res.nunchaku is not None and res.nunchaku.urls == []
    assert res.nunchaku.filename == "nunchaku-1.2.1+cu13.0torch2.11-cp312-cp312-linux_aarch64.whl"
    assert any("aarch64" in note and "builds it from source" in note for note in res.notes)


def test_build_wheel_keeps_refusing_aarch64() -> None:
    res = run(facts("dgx-spark"), gpu={"arch": "sm_121"}, nunchaku={"precision": "fp4", "build": "wheel"})
    text = problems(res)
    assert "no nunchaku wheels are built for aarch64" in text and "nunchaku.build: source" in text


def test_auto_without_an_nvcc_in_the_facts_does_not_build() -> None:
    # Facts from an older agent (no toolchain) show no compiler: auto refuses as before and says how to build.
    res = run(facts("aarch64"), gpu={"arch": "auto"})
    assert "no nunchaku wheels are built for aarch64" in problems(res)


def test_a_torch_newer_than_every_wheel_is_built_for() -> None:
    host = facts("rtx4090", toolchain())
    assert not run(host, torch={"version": "2.12"}, nunchaku={"build": "wheel"}).ok
    build = built(run(host, torch={"version": "2.12"}))
    assert build.torch.startswith("2.12") and build.arches == ["89"] and build.cuda == "13.0"


def test_a_cuda_build_without_a_wheel_is_built_for() -> None:
    host = facts("rtx4090", toolchain(nvcc=Compiler(path="/usr/local/cuda/bin/nvcc", release="12.6",
                                                      version="12.6.85")))
    assert not run(host, cuda={"version": "12.6"}, nunchaku={"build": "wheel"}).ok
    build = built(run(host, cuda={"version": "12.6"}))
    assert build.cuda == "12.6" and build.prerequisites.nvcc_major == "12"


def test_source_always_builds_even_where_a_wheel_fits() -> None:
    res = run(facts("rtx4090", toolchain()), nunchaku={"build": "source"})
    assert built(res).arches == ["89"]


# --- arches ------------------------------------------------------------------------------------


def test_arches_all_is_the_official_list_the_nvcc_enables() -> None:
    build = built(run(facts("rtx4090", toolchain()), nunchaku={"build": "source", "build_options": {"arches": "all"}}))
    assert build.install_mode == "ALL" and build.arches == ["75", "80", "86", "89", "120a", "121a"]


def test_an_explicit_list_setup_py_cannot_build_is_refused() -> None:
    options = {"build": "source", "build_options": {"arches": ["sm_86", "sm_89"]}}
    text = problems(run(facts("rtx4090", toolchain()), nunchaku=options))
    assert "[nunchaku.build_options.arches]" in text and "is neither" in text
    exact = built(run(facts("rtx4090", toolchain()),
                      nunchaku={"build": "source", "build_options": {"arches": ["sm_89"]}}))
    assert exact.arches == ["89"] and exact.install_mode == "FAST"


# --- Hopper and the override ------------------------------------------------------------------


def test_hopper_source_build_is_refused_naming_the_override() -> None:
    res = run(facts("h200-source"), gpu={"arch": "sm_90"}, nunchaku={"build": "source"})
    [violation] = res.violations
    assert violation.field == "nunchaku.build_options.allow_unsupported_arch"
    assert "nunchaku.build_options.allow_unsupported_arch: true" in violation.fix


def test_hopper_auto_without_the_override_still_falls_back_to_fp8() -> None:
    res = run(facts("h200-source"), gpu={"arch": "sm_90"})
    assert res.ok and res.mode == "plain" and res.fallback and "FP8" in res.fallback


def test_hopper_with_the_override_builds_int4_and_says_so_loudly() -> None:
    options = {"build": "source", "build_options": {"allow_unsupported_arch": True}}
    res = run(facts("h200-source"), gpu={"arch": "sm_90"}, nunchaku=options)
    build = built(res)
    assert res.mode == "nunchaku" and res.gpu is not None and res.gpu.precision == "int4"
    assert build.arches == ["90"] and build.add_supported_arches == ["90"] and build.install_mode == "FAST"
    assert build.warnings == [OVERRIDE_WARNING] and OVERRIDE_WARNING in res.notes
    assert build.kernel_path.startswith("nunchaku INT4 on sm_90")
    assert OVERRIDE_WARNING in render_resolution(res)


# --- prerequisites the facts refute ----------------------------------------------------------


def test_no_nvcc_when_a_build_is_needed() -> None:
    text = problems(run(facts("rtx4090", toolchain(nvcc=None)), nunchaku={"build": "source"}))
    assert "no nvcc was found" in text and "CUDA_HOME" in text


def test_nvcc_of_another_major_than_torch() -> None:
    nvcc = Compiler(path="/usr/local/cuda/bin/nvcc", release="12.9", version="12.9.41")
    text = problems(run(facts("h200-source", toolchain(nvcc=nvcc)), gpu={"arch": "sm_90"}, python={
        "version": "3.12", "adopt": "/opt/torch/.venv"}, nunchaku={"build": "source", "build_options": {
            "allow_unsupported_arch": True}}))
    assert "nvcc 12.9" in text and "CUDA 13.x" in text


def test_a_compiler_older_than_gcc_11_is_refused() -> None:
    old = Compiler(path="/usr/bin/gcc-9", version="9.4.0")
    host = facts("rtx4090", toolchain(compilers=[old]))
    text = problems(run(host, nunchaku={"build": "source", "build_options": {"cc": "/usr/bin/gcc-9"}}))
    assert "[nunchaku.build_options.cc]" in text and "gcc >= 11" in text


# --- the source override and the key ----------------------------------------------------------


def test_a_fork_has_no_catalog_pins_and_its_own_key() -> None:
    host = facts("rtx4090", toolchain())
    upstream = built(run(host, nunchaku={"build": "source"}))
    fork = built(run(host, nunchaku={"build": "source", "source": {"repo": "https://git.example.org/me/nunchaku",
                                                                    "ref": "my-branch"}}))
    assert fork.repo == "https://git.example.org/me/nunchaku" and fork.ref == "my-branch" and fork.commit is None
    assert all(s.commit is None for s in fork.submodules) and fork.build_key != upstream.build_key


@pytest.mark.parametrize("change", [
    {"version": "1.2.0"}, {"python": "cp311"}, {"torch": "2.10.0"}, {"cuda": "12.8"}, {"arches": ["120a"]},
    {"platform": "linux_aarch64"},
])
def test_every_part_of_the_build_key_changes_it(change: dict[str, Any]) -> None:
    base: dict[str, Any] = {"version": "1.2.1", "python": "cp312", "torch": "2.11.0", "cuda": "13.0",
                            "arches": ["89"], "platform": "linux_x86_64"}
    assert build_key(**base) == build_key(**dict(base))
    assert build_key(**{**base, **change}) != build_key(**base)
