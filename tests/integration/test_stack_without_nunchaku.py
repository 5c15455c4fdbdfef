"""A CPU-only stack (no nunchaku wheel resolved) from stand-in upstreams: PyPI's unrelated `nunchaku`
in its venv is shown by plan as a removal and removed by apply; a real nunchaku is kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from provisioner.report import Masker, render_plan
from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.runs import apply, changed, converge, pending, plan, statuses
from tests.support.servers import free_port
from tests.support.stack_upstreams import NUNCHAKU_WHEEL, TORCH_CPU_VERSION, StackUpstreams, stack_upstreams

NUNCHAKU = "pip:venv#nunchaku"


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[StackUpstreams]:
    with stack_upstreams(tmp_path / "upstreams") as built:
        yield built


def _cpu_manifest(tmp_path: Path, host: TargetHost, upstreams: StackUpstreams) -> Path:
    body = upstreams.manifest_body(free_port())
    body.update({
        "gpu": {"arch": "auto", "allow_cpu": True},
        "torch": {"index_url": upstreams.cpu_index},
        "nunchaku": {},
        "comfyui": {"repo": upstreams.comfyui.url},
        "models": [],
    })
    return write_manifest(tmp_path, host, body)


def test_cpu_stack_removes_pypis_nunchaku_and_keeps_a_real_one(tmp_path: Path, upstreams: StackUpstreams) -> None:
    # Local only: the removal is the agent's, the same over every transport (see test_resources.py).
    host = TargetHost("local", "local", str(tmp_path / "root"))
    manifest = _cpu_manifest(tmp_path, host, upstreams)
    try:
        converge(manifest)
        assert installed_version(host, "torch") == TORCH_CPU_VERSION, "torch==2.10.0 is met by the +cpu build"
        assert installed_version(host, "nunchaku") is None

        python = host.path("venv/bin/python")
        host.run([python, "-m", "pip", "install", "-q", "--index-url", upstreams.index, "nunchaku==0.16.1"])
        report = plan(manifest)
        assert pending(report) == {NUNCHAKU: ["package.nunchaku"]}
        assert statuses(report)[NUNCHAKU] == "drifted"
        text = click.unstyle(render_plan(report, Masker([])))
        assert ("package.nunchaku: remove 0.16.1  (nunchaku 0.16.1 (PyPI's unrelated package: no nunchaku._C) "
                "will be removed)") in text

        fixed = apply(manifest)
        assert fixed.ok and changed(fixed) == [NUNCHAKU]
        assert installed_version(host, "nunchaku") is None
        assert changed(apply(manifest)) == [] and plan(manifest).exit_code() == 0

        # A real nunchaku someone installed is not removed; plan says so and stays clean.
        host.run([python, "-m", "pip", "install", "-q", "--no-deps", f"{upstreams.files}/{NUNCHAKU_WHEEL}"])
        report = plan(manifest)
        assert report.exit_code() == 0
        [row] = [r for r in report.resources if r["id"] == NUNCHAKU]
        assert any("is kept" in note for note in row["notes"])
        assert changed(apply(manifest)) == []
        assert installed_version(host, "nunchaku") is not None
    finally:
        record = Path(host.path(".provision/services/comfyui.json"))
        if record.exists():
            host.run(["kill", str(json.loads(record.read_text())["pid"])], check=False)
