"""The compilers the facts report, found the way torch's cpp_extension finds nvcc, and read back typed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioner.agent import toolchain
from provisioner.facts import Facts

NVCC_OUTPUT = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Cuda compilation tools, release 13.0, V13.0.88
Build cuda_13.0.r13.0/compiler.36424714_0
"""


def _program(path: Path, output: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\ncat <<'EOF'\n" + output + "EOF\n")
    path.chmod(0o755)
    return path


def test_cuda_home_wins_over_path_and_versions_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "cuda-13.0"
    _program(home / "bin" / "nvcc", NVCC_OUTPUT)
    _program(tmp_path / "path" / "nvcc", NVCC_OUTPUT.replace("13.0", "12.8"))
    cc = _program(tmp_path / "bin" / "gcc-13", "13.3.0\n")
    monkeypatch.setenv("CUDA_HOME", str(home))
    monkeypatch.setenv("PATH", f"{tmp_path / 'path'}:{os.environ['PATH']}")
    found = toolchain.gather([str(cc), str(tmp_path / "missing")])
    facts = Facts.model_validate({"arch": "x86_64", "toolchain": found})
    assert facts.toolchain is not None and facts.toolchain.nvcc is not None
    assert facts.toolchain.nvcc.path == str(home / "bin" / "nvcc")
    assert (facts.toolchain.nvcc.release, facts.toolchain.nvcc.version, facts.toolchain.nvcc.major) == (
        "13.0", "13.0.88", 13)
    assert facts.toolchain.cuda_home == str(home)
    compiler = facts.toolchain.compiler(str(cc))
    assert compiler is not None and compiler.version == "13.3.0" and compiler.major == 13
    missing = facts.toolchain.compiler(str(tmp_path / "missing"))
    assert missing is not None and missing.version is None and missing.error == "not an executable file"
    assert isinstance(facts.toolchain.cpu_count, int) and facts.toolchain.cpu_count >= 1


def test_nvcc_on_path_gives_cuda_home_as_torch_derives_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nvcc = _program(tmp_path / "cuda" / "bin" / "nvcc", NVCC_OUTPUT)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{nvcc.parent}:{os.environ['PATH']}")
    found = toolchain.gather([])
    assert found["nvcc"]["path"] == str(nvcc) and found["cuda_home"] == str(tmp_path / "cuda")


def test_facts_from_an_older_agent_have_no_toolchain() -> None:
    assert Facts.model_validate({"arch": "x86_64"}).toolchain is None
