"""The source build's pure parts: preflight judging on recorded facts, version parsing, MAX_JOBS, the
override patch, the plan line and the spec's validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from provisioner.agent import build_preflight as pre
from provisioner.agent.build_source import _patched
from provisioner.agent.kinds.wheel_build import plan_line
from provisioner.agent.protocol import ResourceFailure
from provisioner.resources import ResourceSpec

UPSTREAM_ASSERT = 'assert sm in ["75", "80", "86", "89", "120a", "121a"], f"Unsupported SM {sm}"'
WHEEL = "cache/wheels/nunchaku-1.2.1+cu13.0torch2.11-cp312-cp312-linux_x86_64.whl"


def spec(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "wheel_build", "path": WHEEL, "project": "nunchaku", "repo": "https://github.com/nunchaku-ai/nunchaku",
        "ref": "v1.2.1", "python": "/opt/torch/.venv/bin/python", "workdir": "build/nunchaku-0123456789ab",
        "env": {"NUNCHAKU_INSTALL_MODE": "FAST"}, "expect_arches": ["90"], "max_jobs": 16,
        "prerequisites": {"nvcc_major": "13", "gcc_min": 11, "min_free_bytes": 20 << 30, "job_memory_bytes": 4 << 30},
        "build_key": "ab" * 16,
    }
    body.update(changes)
    return body


def facts(**changes: Any) -> dict[str, Any]:
    """What gather() reads on the H200 host (recorded), with changes."""
    body: dict[str, Any] = {
        "python": "/opt/torch/.venv/bin/python", "workdir": "/srv/build/nunchaku",
        "nvcc": "/usr/local/cuda/bin/nvcc", "cuda_home": "/usr/local/cuda", "nvcc_looked": "PATH",
        "nvcc_release": ["13.0", "13.0.88"],
        "CC": {"command": "/usr/bin/gcc", "path": "/usr/bin/gcc", "version": [13, 3],
               "first_line": "gcc (Ubuntu 13.3.0-6ubuntu2~24.04) 13.3.0"},
        "CXX": {"command": "/usr/bin/g++", "path": "/usr/bin/g++", "version": [13, 3],
                "first_line": "g++ (Ubuntu 13.3.0-6ubuntu2~24.04) 13.3.0"},
        "venv": {"include": "/usr/include/python3.12", "python_h": True, "torch": "2.11.0+cu130",
                 "torch_cuda": "13.0", "setuptools": "80.9.0"},
        "ninja": "/opt/torch/.venv/bin/ninja", "free_bytes": 200 << 30, "cores": 16, "mem_available": 100 << 30,
    }
    body.update(changes)
    return body


def test_a_ready_host_has_no_violations() -> None:
    assert pre.judge(spec(), facts()) == []


def test_missing_python_headers_name_the_include_dir_and_the_package() -> None:
    venv = dict(facts()["venv"], python_h=False)
    [problem] = pre.judge(spec(), facts(venv=venv))
    assert problem.startswith("Python headers missing: no Python.h in /usr/include/python3.12 (sysconfig's include "
                              "dir of /opt/torch/.venv/bin/python)")
    assert "python3-dev" in problem
    assert pre.judge(spec(prerequisites={"python_headers": False}), facts(venv=venv)) == []


def test_a_clang_is_not_held_to_the_gcc_floor() -> None:
    clang = {"command": "clang", "path": "/usr/bin/clang", "version": [14, 0], "first_line": "clang version 14.0.0"}
    assert pre.judge(spec(), facts(CC=clang)) == []


def test_torch_of_another_build_is_refused_before_compiling_naming_both_wheels() -> None:
    venv = dict(facts()["venv"], torch="2.10.0+cu128", torch_cuda="12.8")
    [problem] = pre.judge(spec(), facts(venv=venv))
    assert ("would build nunchaku-1.2.1+cu12.8torch2.10-cp312-cp312-linux_x86_64.whl, but the resolution expects "
            "nunchaku-1.2.1+cu13.0torch2.11-cp312-cp312-linux_x86_64.whl") in problem


@pytest.mark.parametrize(("line", "version"), [
    ("gcc (Ubuntu 9.4.0-1ubuntu1~20.04.2) 9.4.0", (9, 4)),
    ("gcc (Debian 12.2.0-14+deb12u1) 12.2.0", (12, 2)),
    ("g++ (GCC) 11.4.1 20231218 (Red Hat 11.4.1-3)", (11, 4)),
    ("gcc (GCC) 13.2.0", (13, 2)),
])
def test_compiler_versions_of_real_distributions(line: str, version: tuple[int, int]) -> None:
    assert pre.compiler_version(line + "\nCopyright (C) 2023 Free Software Foundation, Inc.\n") == version


def test_nvcc_release_as_setup_py_parses_it() -> None:
    text = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\n"
    assert pre.nvcc_release(text) == ("13.0", "13.0.88")
    assert pre.nvcc_release("command not found") is None


def test_max_jobs_from_cores_and_memory() -> None:
    job = {"job_memory_bytes": 4 << 30}
    assert pre.auto_jobs(job, 16, 100 << 30) == 16
    assert pre.auto_jobs(job, 16, 30 << 30) == 7
    assert pre.auto_jobs(job, 16, 1 << 30) == 1
    assert pre.auto_jobs(job, 4, None) == 4


def test_override_patch_adds_the_arch_once_and_only_to_the_one_assert() -> None:
    setup = f"x = 1\n            {UPSTREAM_ASSERT}\n".encode()
    patched = _patched(setup, ["90"], spec(), "/w").decode()
    assert 'assert sm in ["75", "80", "86", "89", "120a", "121a", "90"], f"Unsupported SM {sm}"' in patched
    assert _patched(patched.encode(), ["90"], spec(), "/w").decode() == patched
    with pytest.raises(ResourceFailure, match=r"/w/setup.py has 2 lines like"):
        _patched(setup + setup, ["90"], spec(), "/w")


def test_plan_line_says_what_is_built_and_the_override_loudly() -> None:
    assert plan_line(spec()) == "build nunchaku v1.2.1 from source (sm_90, MAX_JOBS=16)"
    line = plan_line(spec(add_supported_arches=["90"]), objects=12)
    assert line.startswith("build nunchaku v1.2.1 from source (sm_90, MAX_JOBS=16), resuming with 12 compiled "
                           "objects -- UNSUPPORTED-ARCH OVERRIDE, for diagnostics only: sm_90")


adapter: TypeAdapter[Any] = TypeAdapter(ResourceSpec)


def test_spec_validates_env_keys_arches_and_paths() -> None:
    adapter.validate_python(spec(commit="a" * 40, submodules=[
        {"path": "third_party/cutlass", "url": "https://github.com/NVIDIA/cutlass.git", "commit": "b" * 40}]))
    for bad, message in [
        ({"env": {"LD_PRELOAD": "/x.so"}}, "build env may set only"),
        ({"env": {"NUNCHAKU_INSTALL_MODE": "SOME"}}, "must be FAST or ALL"),
        ({"env": {"CC": "gcc"}}, "CC must be an absolute path"),
        ({"expect_arches": ["sm_90"]}, "is not an SM as setup.py writes it"),
        ({"path": "cache/wheels/nunchaku.tar.gz"}, "is not a wheel file name"),
        ({"workdir": "cache"}, "must not contain each other"),
        ({"python": "../venv/bin/python"}, "must not contain '..'"),
        ({"commit": "v1.2.1"}, "should match pattern"),
    ]:
        with pytest.raises(ValidationError, match=message):
            adapter.validate_python(spec(**bad))
