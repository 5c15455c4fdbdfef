"""The wheel_build resource through the real agent: a stand-in nunchaku (git tag + five submodules, a setup.py
shaped like upstream's, a real ninja build of a CPU extension) built, killed, resumed and refused."""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitrepos import git
from tests.support.hosts import TargetHost, write_manifest
from tests.support.kills import GroupRun
from tests.support.runs import apply, converge, plan
from tests.support.source_extension import (
    GPU_ENV,
    SOURCES,
    SourceUpstream,
    build_venv,
    fake_cuda,
    fake_tool,
    fake_torch_wheel,
    gcc_version_text,
    make_source_upstream,
)

PY = f"cp{sys.version_info[0]}{sys.version_info[1]}"
WHEEL = f"nunchaku-1.2.1+cu13.0torch2.11-{PY}-{PY}-linux_x86_64.whl"
WORKDIR = "build/nunchaku-0123456789ab"
KEY = "0123456789ab" * 4


@pytest.fixture(scope="module")
def build_venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the root (adopted, as /opt/torch/.venv is on the GPU host) with the stand-in torch."""
    base = tmp_path_factory.mktemp("buildvenv")
    return build_venv(base / "venv", fake_torch_wheel(base / "wheels"))


@pytest.fixture
def source(tmp_path: Path) -> SourceUpstream:
    return make_source_upstream(tmp_path / "upstreams")


@pytest.fixture
def cuda(tmp_path: Path) -> Path:
    return fake_cuda(tmp_path / "cuda-13.0")


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TargetHost]:
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv(GPU_ENV, raising=False)
    yield TargetHost("local", "local", str(tmp_path / "root"))


def spec(source: SourceUpstream, python: Path, cuda: Path, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "wheel_build", "path": f"cache/wheels/{WHEEL}", "project": "nunchaku",
        "repo": source.nunchaku.url, "ref": "v1.2.1", "commit": source.commit,
        "submodules": source.submodule_specs(), "python": str(python), "workdir": WORKDIR,
        "env": {"NUNCHAKU_INSTALL_MODE": "FAST", "CUDA_HOME": str(cuda)}, "expect_arches": ["89"],
        "prerequisites": {"nvcc_major": "13", "gcc_min": 11, "min_free_bytes": 1 << 20,
                          "job_memory_bytes": 64 << 20},
        "max_jobs": 2, "build_key": KEY,
    }
    body.update(changes)
    return body


def manifest(tmp_path: Path, host: TargetHost, *resources: dict[str, Any]) -> Path:
    return write_manifest(tmp_path, host, {"resources": list(resources)})


def failure(report: Any) -> str:
    rows = [r for r in report.resources if r.get("outcome") == "failed"]
    assert rows, report.as_json()
    return str(rows[0].get("error"))


def compile_log(root: Path) -> list[str]:
    logs = list((root / WORKDIR / "build").glob("temp.*/compile.log"))
    return logs[0].read_text().split() if logs else []


def recorded_by_ninja(root: Path) -> list[str]:
    """The sources whose objects ninja has recorded as built (`.ninja_log`). A compile that ended in the instant
    before a kill, but before ninja wrote its record, is compiled again on resume, as real ninja does."""
    logs = list((root / WORKDIR / "build").glob("temp.*/.ninja_log"))
    if not logs:
        return []
    outputs = [line.split("\t")[3] for line in logs[0].read_text().splitlines() if line and not line.startswith("#")]
    temp = logs[0].parent
    return [str(root / WORKDIR / os.path.relpath(os.path.splitext(out)[0], temp)) + ".c" for out in outputs]


def objects(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for obj in (root / WORKDIR / "build").glob("temp.*/**/*.o"):
        st = obj.stat()
        found[str(obj)] = (st.st_ino, st.st_mtime_ns)
    return found


def test_build_end_to_end_then_no_changes(local: TargetHost, tmp_path: Path, source: SourceUpstream,
                                          build_venv_python: Path, cuda: Path) -> None:
    path = manifest(tmp_path, local, spec(source, build_venv_python, cuda))
    first = plan(path)
    assert first.exit_code() == 2
    reason = first.resources[0]["changes"][0]["reason"]
    assert reason == "build nunchaku v1.2.1 from source (sm_89, MAX_JOBS=2)"

    events: list[dict[str, Any]] = []
    converge(path)
    wheel = Path(local.path(f"cache/wheels/{WHEEL}"))
    assert wheel.is_file()
    root = Path(local.root)
    assert sorted(compile_log(root)) == sorted(str(root / WORKDIR / s) for s in ["nunchaku/csrc/pybind.c", *SOURCES])
    assert (next((root / WORKDIR / "build").glob("temp.*/max_jobs.log")).read_text().split() == ["2"])
    # The extension was compiled against the five submodules' headers, at their pinned commits.
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    import subprocess

    done = subprocess.run([str(build_venv_python), "-c", "import nunchaku, nunchaku._C as c; "
                           "print(nunchaku.__version__, c.STANDIN_HEADERS)"],
                          cwd=unpacked, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1.2.1", "5"]
    for sub, sha in source.pins.items():
        assert git("-C", str(root / WORKDIR / sub), "rev-parse", "HEAD") == sha
    del events

    # Replaced behind our back: drift, and apply builds it again (the objects are reused).
    wheel.write_bytes(b"not the wheel")
    again = plan(path)
    assert again.resources[0]["status"] == "drifted"
    assert "changed since it was built" in again.resources[0]["changes"][0]["reason"]
    converge(path)
    assert len(compile_log(root)) == len(SOURCES) + 1, "nothing was compiled twice"

    # Another build key (another torch, another arch list) is a change of the wheel at the same path.
    other = manifest(tmp_path, local, spec(source, build_venv_python, cuda, build_key="f" * 48))
    row = plan(other).resources[0]
    assert [c["field"] for c in row["changes"]] == ["build_key"]
    assert "built for another build (key 0123456789ab, want ffffffffffff)" in row["changes"][0]["reason"]


def test_killed_build_leaves_no_wheel_and_resumes(local: TargetHost, tmp_path: Path, build_venv_python: Path,
                                                  cuda: Path) -> None:
    slow = make_source_upstream(tmp_path / "slow", functions=300)
    path = manifest(tmp_path, local, spec(slow, build_venv_python, cuda, max_jobs=1))
    root = Path(local.root)
    run = GroupRun(["apply", str(path)])
    killed = run.kill_when(lambda r: len(compile_log(root)) >= 2, "two objects compiled", timeout=240)
    finished = compile_log(root)
    recorded = recorded_by_ninja(root)
    kept = objects(root)
    assert 2 <= len(finished) < len(SOURCES) + 1, killed.stderr
    assert not list((root / "cache" / "wheels").glob("*.whl")), "a killed build left a wheel at the path"

    row = plan(path).resources[0]
    assert "resuming with" in row["changes"][0]["reason"]
    report = apply(path)
    assert report.ok, report.as_json()
    assert (root / "cache" / "wheels" / WHEEL).is_file()
    log = compile_log(root)
    assert log[:len(finished)] == finished
    resumed = log[len(finished):]
    assert set(recorded) <= set(finished) and len(recorded) >= len(finished) - 1, (recorded, finished)
    assert not set(recorded) & set(resumed), "a source ninja had recorded before the kill was compiled again"
    assert sorted(resumed) == sorted(set(resumed))
    for obj, stamp in kept.items():
        if any(obj.endswith(os.path.splitext(os.path.relpath(s, root / WORKDIR))[0] + ".o") for s in recorded):
            assert objects(root)[obj] == stamp, f"{obj} was rewritten"
    assert not [p for p in (root / "cache" / "wheels").iterdir() if p.name != WHEEL], "temp files were left"
    assert plan(path).exit_code() == 0


def test_every_missing_prerequisite_is_listed_at_once(local: TargetHost, tmp_path: Path, source: SourceUpstream,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "bare-venv"
    import subprocess

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    tools = tmp_path / "tools"
    fake_tool(tools, "gcc", gcc_version_text("gcc", "9.4.0"))
    fake_tool(tools, "g++", gcc_version_text("g++", "9.4.0"))
    (tools / "python3").symlink_to("/usr/bin/python3")
    monkeypatch.setenv("PATH", str(tools))  # no ninja, no nvcc, gcc 9
    no_cuda = tmp_path / "no-cuda"
    no_cuda.mkdir()
    body = spec(source, bare / "bin" / "python", no_cuda, prerequisites={
        "nvcc_major": "13", "gcc_min": 11, "min_free_bytes": 10 ** 18, "job_memory_bytes": 10 ** 15})
    report = apply(manifest(tmp_path, local, body))
    error = failure(report)
    assert f"nvcc not found (looked in CUDA_HOME={no_cuda} (from the manifest))" in error
    assert f"CC compiler {tools}/gcc is 9.4; nunchaku is C++20 and needs gcc >= 11" in error
    assert f"CXX compiler {tools}/g++ is 9.4" in error
    assert "ninja not found in the venv" in error and "pip install ninja" in error
    assert "the build needs 909494.7 TiB" in error
    assert "one compiler job needs up to" in error
    assert "torch does not import in the venv" in error
    assert "nothing was fetched or compiled" in error
    assert not Path(local.path(WORKDIR)).exists(), "preflight fetched the source"


def test_nvcc_major_must_match_torch(local: TargetHost, tmp_path: Path, source: SourceUpstream,
                                     build_venv_python: Path) -> None:
    cuda12 = fake_cuda(tmp_path / "cuda-12.8", "12.8", "12.8.93")
    error = failure(apply(manifest(tmp_path, local, spec(source, build_venv_python, cuda12))))
    assert (f"nvcc 12.8.93 ({cuda12}/bin/nvcc) but the venv's torch is built for CUDA 13: torch's cpp_extension "
            "refuses") in error


def test_hopper_is_refused_without_the_override_and_built_with_it(
        local: TargetHost, tmp_path: Path, source: SourceUpstream, build_venv_python: Path, cuda: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GPU_ENV, "9.0")
    refused = apply(manifest(tmp_path, local, spec(source, build_venv_python, cuda, expect_arches=["90"])))
    assert "AssertionError: Unsupported SM 90" in failure(refused)
    assert not Path(local.path(f"cache/wheels/{WHEEL}")).exists()

    path = manifest(tmp_path, local, spec(source, build_venv_python, cuda, expect_arches=["90"],
                                          add_supported_arches=["90"]))
    reason = plan(path).resources[0]["changes"][0]["reason"]
    assert reason.startswith("build nunchaku v1.2.1 from source (sm_90, MAX_JOBS=2) -- UNSUPPORTED-ARCH OVERRIDE")
    converge(path)
    setup = Path(local.path(f"{WORKDIR}/setup.py")).read_text()
    assert 'assert sm in ["75", "80", "86", "89", "120a", "121a", "90"], f"Unsupported SM {sm}"' in setup
    assert "90" not in git("-C", local.path(WORKDIR), "show", "HEAD:setup.py").split("assert sm in")[1][:40]
    assert any("UNSUPPORTED-ARCH OVERRIDE" in n for n in plan(path).resources[0].get("notes", []))


def test_override_refused_when_setup_py_changed_shape(local: TargetHost, tmp_path: Path, build_venv_python: Path,
                                                      cuda: Path) -> None:
    changed = make_source_upstream(tmp_path / "changed", functions=5,
                                   setup_assert='assert sm in SUPPORTED, f"Unsupported SM {sm}"')
    error = failure(apply(manifest(tmp_path, local, spec(changed, build_venv_python, cuda,
                                                         add_supported_arches=["90"]))))
    assert f"{local.path(WORKDIR)}/setup.py has 0 lines like `assert sm in [...]" in error


def test_wrong_commits_are_refused(local: TargetHost, tmp_path: Path, source: SourceUpstream,
                                   build_venv_python: Path, cuda: Path) -> None:
    moved = apply(manifest(tmp_path, local, spec(source, build_venv_python, cuda, commit="1" * 40)))
    assert (f"v1.2.1 in {source.nunchaku.url} is commit {source.commit[:12]}, but the release is commit "
            "111111111111") in failure(moved)

    subs = source.submodule_specs()
    subs[0] = dict(subs[0], commit="2" * 40)
    pinned = failure(apply(manifest(tmp_path, local, spec(source, build_venv_python, cuda, submodules=subs))))
    assert (f"pins submodule {subs[0]['path']} at {source.pins[subs[0]['path']][:12]}, but the build expects "
            "222222222222") in pinned

    subs = source.submodule_specs()
    subs[1] = dict(subs[1], url=source.submodules["mio"].url)  # a mirror that lacks the gitlink's commit
    missing = failure(apply(manifest(tmp_path, local, spec(source, build_venv_python, cuda, submodules=subs))))
    assert f"submodule {subs[1]['path']}: commit {source.pins[subs[1]['path']][:12]} (the gitlink) is not in" in missing

    dropped = failure(apply(manifest(tmp_path, local, spec(source, build_venv_python, cuda,
                                                           submodules=source.submodule_specs()[1:]))))
    assert "has submodules the build does not list: third_party/Block-Sparse-Attention" in dropped


def test_wheel_name_must_be_the_resolved_one(local: TargetHost, tmp_path: Path, source: SourceUpstream,
                                             build_venv_python: Path, cuda: Path) -> None:
    older = WHEEL.replace("torch2.11", "torch2.10")
    error = failure(apply(manifest(tmp_path, local, spec(source, build_venv_python, cuda,
                                                         path=f"cache/wheels/{older}"))))
    assert f"would build {WHEEL}, but the resolution expects {older}" in error

    newer = make_source_upstream(tmp_path / "newer", functions=5, version="1.2.2")
    error = failure(apply(manifest(tmp_path, local, spec(newer, build_venv_python, cuda, workdir="build/other"))))
    assert f"the build wrote {WHEEL.replace('1.2.1', '1.2.2')}, but the resolution expects {WHEEL}" in error
    assert not list(Path(local.path("cache/wheels")).iterdir())
