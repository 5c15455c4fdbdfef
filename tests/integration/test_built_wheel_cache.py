"""Two hosts, one build: the first host builds the stand-in nunchaku, the controller fetches the wheel into
its cache, and the second host with the same build key gets it pushed and builds nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, plan
from tests.support.source_extension import GPU_ENV, build_venv, fake_cuda, fake_torch_wheel, make_source_upstream

PY = f"cp{sys.version_info[0]}{sys.version_info[1]}"
WHEEL = f"cache/wheels/nunchaku-1.2.1+cu13.0torch2.11-{PY}-{PY}-linux_x86_64.whl"
KEY = "0123456789ab" * 4
RID = f"wheel_build:{WHEEL}"


def _spec(source: Any, python: Path, cuda: Path, key: str) -> dict[str, Any]:
    return {
        "kind": "wheel_build", "path": WHEEL, "project": "nunchaku",
        "repo": source.nunchaku.url, "ref": "v1.2.1", "commit": source.commit,
        "submodules": source.submodule_specs(), "python": str(python), "workdir": f"build/nunchaku-{key[:12]}",
        "env": {"NUNCHAKU_INSTALL_MODE": "FAST", "CUDA_HOME": str(cuda)}, "expect_arches": ["89"],
        "prerequisites": {"nvcc_major": "13", "gcc_min": 11, "min_free_bytes": 1 << 20, "job_memory_bytes": 64 << 20},
        "max_jobs": 2, "build_key": key,
    }


def _compiled(root: Path) -> list[str]:
    return [line for log in root.glob("build/*/build/temp.*/compile.log") for line in log.read_text().split()]


def test_the_second_host_gets_the_built_wheel_pushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv(GPU_ENV, raising=False)
    source = make_source_upstream(tmp_path / "upstreams")
    python = build_venv(tmp_path / "buildvenv", fake_torch_wheel(tmp_path / "wheels"))
    cuda = fake_cuda(tmp_path / "cuda-13.0")
    cache = tmp_path / "controller-cache"
    roots = {name: tmp_path / f"root-{name}" for name in ("a", "b")}
    manifests = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        host = TargetHost("local", "local", str(roots[name]))
        manifests[name] = write_manifest(tmp_path / name, host, {"resources": [_spec(source, python, cuda, KEY)]})

    built = apply(manifests["a"], download_cache=cache)
    assert built.ok and built.pushed == [], built.as_json()
    assert _compiled(roots["a"]), "the first host compiled the extension"
    cached = cache / "built-wheels" / KEY / Path(WHEEL).name
    assert cached.read_bytes() == (roots["a"] / WHEEL).read_bytes()

    pushed = apply(manifests["b"], download_cache=cache)
    assert pushed.ok and pushed.pushed == [RID], pushed.as_json()
    assert _compiled(roots["b"]) == [] and not (roots["b"] / "build").exists(), "no build ran on the second host"
    assert (roots["b"] / WHEEL).read_bytes() == cached.read_bytes()
    assert plan(manifests["b"]).exit_code() == 0
    assert not list((roots["b"] / ".provision" / "incoming").glob("*.whl")), "the staged wheel was consumed"

