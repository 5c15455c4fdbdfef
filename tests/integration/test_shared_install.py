"""Install steps on one venv that are ready together share one real pip or uv run: torch from its CUDA
index with a requirements file from another index, resolved as one set; a failed shared run is retried
step by step so the step at fault reports it; a torch another index could also serve installs alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.engine import ApplyReport, HostSession, RunOptions
from provisioner.manifest import load_manifest
from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.installers import INSTALLERS, installed_by, place_uv
from tests.support.runs import apply, changed, converge, pending, plan
from tests.support.servers import serve_directory
from tests.support.wheels import build_torch_wheels, build_wheel, write_simple_index

REQUIREMENTS = "app/requirements.txt"
PINS = ["torch==2.10.0+cu130", "torchvision==0.25.0+cu130"]


def _index(root: Path, build: Any) -> Iterator[str]:
    wheels = root / "wheels"
    wheels.mkdir(parents=True)
    build(wheels)
    write_simple_index(wheels, root / "index")
    with serve_directory(root / "index") as base:
        yield f"{base}/simple"


@pytest.fixture(scope="module")
def cuda_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PyTorch-like index: labelled builds of torch and its companions, nothing else."""
    yield from _index(tmp_path_factory.mktemp("cuda-index"), lambda wheels: build_torch_wheels(wheels, "cu130"))


@pytest.fixture(scope="module")
def plugin_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The plugins' index (PyPI's part): no torch at all, so a requirement on torch is met only by the
    CUDA index's build, or by the torch already installed."""
    def build(wheels: Path) -> None:
        build_wheel(wheels, "provanytorch", "1.0.0", requires=["torch", "provdep>=1.0"])
        build_wheel(wheels, "provoldtorch", "1.0.0", requires=["torch==2.9.1"])
        build_wheel(wheels, "provdep", "1.0.0")
    yield from _index(tmp_path_factory.mktemp("plugin-index"), build)


#: The stack's step between torch and the requirements on a host without a nunchaku wheel: it only
#: removes PyPI's unrelated `nunchaku`, so it has nothing to do on a fresh venv.
REMOVES_UNRELATED = {"kind": "pip", "name": "nunchaku", "venv": "venv", "remove_unrelated": [
    {"name": "nunchaku", "marker_module": "nunchaku._C", "label": "PyPI's unrelated package"}]}


def _manifests(tmp_path: Path, host: TargetHost, installer: str, cuda_index: str, plugin_index: str,
               lines: list[str], pins: list[str] = PINS, between: list[dict[str, Any]] | None = None,
               ) -> tuple[Path, Path]:
    """(the venv and the requirements file alone, then torch and the requirements added): applied in that
    order, both install steps are ready at the same moment."""
    base = [{"kind": "venv", "path": "venv"},
            {"kind": "file", "path": REQUIREMENTS, "content": "\n".join(lines) + "\n"}]
    installs = [
        {"kind": "pip", "name": "torch", "venv": "venv", "packages": pins, "index_url": cuda_index,
         "installer": installer},
        *(between or []),
        {"kind": "requirements", "venv": "venv", "file": REQUIREMENTS, "constraints": [PINS[0]],
         "index_url": plugin_index, "installer": installer},
    ]
    first = write_manifest(tmp_path, host, {"resources": base}, name="base.yaml")
    return first, write_manifest(tmp_path, host, {"resources": base + installs}, name="stack.yaml")


def _apply(manifest: Path) -> tuple[ApplyReport, list[str]]:
    logs: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "log":
            logs.append(str(event.get("message")))

    return HostSession(load_manifest(manifest), RunOptions()).apply(on_event), logs


def _host(tmp_path: Path, installer: str) -> TargetHost:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    if installer == "uv":
        place_uv(host)
    return host


@pytest.mark.parametrize("installer", INSTALLERS)
def test_torch_and_requirements_from_two_indexes_install_in_one_run(tmp_path: Path, cuda_index: str,
                                                                   plugin_index: str, installer: str) -> None:
    host = _host(tmp_path, installer)
    base, stack = _manifests(tmp_path, host, installer, cuda_index, plugin_index, ["torch", "provanytorch"])
    converge(base)
    report, logs = _apply(stack)
    assert report.ok, report.as_json()
    assert changed(report) == ["pip:venv#torch", f"requirements:{REQUIREMENTS}"]
    rows = {row["id"]: row for row in report.resources}
    torch, requirements = rows["pip:venv#torch"], rows[f"requirements:{REQUIREMENTS}"]
    assert (torch["started"], torch["ended"]) == (requirements["started"], requirements["ended"]), \
        "one run for both: the same start and end"
    assert f"installing pip:venv#torch, requirements:{REQUIREMENTS} in one run" in logs, logs
    # The plugin index has no torch: provanytorch's `torch` was met by the CUDA build in the same run.
    assert installed_version(host, "torch") == "2.10.0+cu130"
    assert installed_version(host, "torchvision") == "0.25.0+cu130"
    assert installed_version(host, "provanytorch") == "1.0.0" and installed_version(host, "provdep") == "1.0.0"
    assert installed_by(host, "provanytorch") == installer == installed_by(host, "torch")
    assert plan(stack).exit_code() == 0, "each step recorded what its own apply records (the file's digest)"
    assert changed(apply(stack)) == []


def test_an_idle_step_between_torch_and_the_requirements_does_not_split_the_run(
        tmp_path: Path, cuda_index: str, plugin_index: str) -> None:
    host = _host(tmp_path, "uv")
    _, stack = _manifests(tmp_path, host, "uv", cuda_index, plugin_index, ["provanytorch"],
                          between=[REMOVES_UNRELATED])
    # A fresh host: the venv is made by this apply, so every step on it is re-probed once it exists (the
    # idle one too), and the requirements file is written long before the venv is made.
    report, logs = _apply(stack)
    assert report.ok, report.as_json()
    rows = {row["id"]: row for row in report.resources}
    assert rows["pip:venv#nunchaku"]["outcome"] == "ok", "nothing to remove on a fresh venv"
    assert f"installing pip:venv#torch, requirements:{REQUIREMENTS} in one run" in logs, logs
    assert installed_version(host, "provanytorch") == "1.0.0"
    assert plan(stack).exit_code() == 0


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_failed_shared_run_is_retried_step_by_step_and_blames_the_step_at_fault(
        tmp_path: Path, cuda_index: str, plugin_index: str, installer: str) -> None:
    host = _host(tmp_path, installer)
    base, stack = _manifests(tmp_path, host, installer, cuda_index, plugin_index, ["provoldtorch"])
    converge(base)
    report, logs = _apply(stack)
    assert report.failures == [f"requirements:{REQUIREMENTS}"], report.as_json()
    assert any(line.startswith("the shared install failed; installing each step on its own") for line in logs), logs
    rows = {row["id"]: row for row in report.resources}
    assert rows["pip:venv#torch"]["outcome"] == "changed", "torch converged on its own run"
    assert "torch" in rows[f"requirements:{REQUIREMENTS}"]["error"]
    assert installed_version(host, "torch") == "2.10.0+cu130"
    assert installed_version(host, "provoldtorch") is None
    assert pending(plan(stack)) == {f"requirements:{REQUIREMENTS}": ["packages"]}


def test_a_torch_another_index_could_serve_installs_in_its_own_run(tmp_path: Path, cuda_index: str,
                                                                   plugin_index: str) -> None:
    host = _host(tmp_path, "pip")
    base, stack = _manifests(tmp_path, host, "pip", cuda_index, plugin_index, ["provanytorch"],
                             pins=["torch==2.10.0", "torchvision"])
    converge(base)
    report, logs = _apply(stack)
    assert report.ok, report.as_json()
    rows = {row["id"]: row for row in report.resources}
    assert rows[f"requirements:{REQUIREMENTS}"]["started"] >= rows["pip:venv#torch"]["ended"], "one after the other"
    assert not [line for line in logs if "in one run" in line], logs
    assert installed_version(host, "torch") == "2.10.0+cu130"
