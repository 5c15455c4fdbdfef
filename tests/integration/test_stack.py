"""The whole ComfyUI + Nunchaku stack from stand-in upstreams: apply, no-op, tamper each part, fix."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.runs import apply, changed, converge, pending, plan
from tests.support.servers import free_port
from tests.support.stack_upstreams import (
    MODEL_FILE,
    NUNCHAKU_VERSION,
    TORCH_CUDA_VERSION,
    StackUpstreams,
    stack_upstreams,
)

COMFY = "ComfyUI"
MODEL = f"{COMFY}/models/diffusion_models/{MODEL_FILE}"
PLUGIN = f"{COMFY}/custom_nodes/ComfyUI-nunchaku"


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[StackUpstreams]:
    with stack_upstreams(tmp_path / "upstreams") as built:
        yield built


def _object_info(host: TargetHost, port: int) -> dict[str, object]:
    script = (f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/object_info', "
              "timeout=5).read().decode())")
    for _ in range(100):
        done = host.run(["python3", "-c", script], check=False)
        if done.returncode == 0:
            return json.loads(done.stdout)  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"ComfyUI does not answer on port {port}:\n{host.read('logs/comfyui.log')}")


def _service_pid(host: TargetHost) -> int:
    return int(json.loads(host.read(".provision/services/comfyui.json"))["pid"])


def test_full_stack_converges_and_every_tampering_is_exact(host: TargetHost, tmp_path: Path,
                                                           upstreams: StackUpstreams) -> None:
    port = free_port()
    manifest = write_manifest(tmp_path, host, upstreams.manifest_body(port))
    try:
        converge(manifest)
        assert installed_version(host, "nunchaku") == NUNCHAKU_VERSION
        # The manifest pins torch==2.10.0; the index serves 2.10.0+cu130, and that pin is met (PEP 440).
        assert installed_version(host, "torch") == TORCH_CUDA_VERSION
        head = host.run(["git", "-C", host.path(PLUGIN), "rev-parse", "HEAD"]).stdout.strip()
        assert head == upstreams.plugin.tags["v1.2.1"]
        assert "NunchakuFluxDiTLoader" in _object_info(host, port)
        first_pid = _service_pid(host)

        # 1. a deleted model is re-downloaded
        host.run(["rm", host.path(MODEL)])
        assert pending(plan(manifest)) == {f"download:{MODEL}": ["file"]}

        # 2. PyPI's unrelated nunchaku replaces the wheel
        pip = [host.path("venv/bin/python"), "-m", "pip", "install", "-q", "--index-url", upstreams.index]
        host.run([*pip, "nunchaku==0.15.0"])
        # 3. the plugin's HEAD moves
        host.run(["git", "-C", host.path(PLUGIN), "checkout", "-q", "v1.0.0"])
        # 4. someone edits the env file
        host.sh(f"sed -i 's/^COMFYUI_MODE=.*/COMFYUI_MODE=edited/' {host.path('comfyui.env')}")

        report = plan(manifest)
        assert pending(report) == {
            "envfile:comfyui.env": ["env.COMFYUI_MODE"],
            "pip:venv#nunchaku": ["package.nunchaku"],
            f"git:{PLUGIN}": ["HEAD"],
            f"download:{MODEL}": ["file"],
        }
        nunchaku_change = next(r for r in report.resources if r["id"] == "pip:venv#nunchaku")["changes"][0]
        assert (nunchaku_change["old"], nunchaku_change["new"]) == ("0.15.0", NUNCHAKU_VERSION)

        fixed = apply(manifest)
        assert fixed.ok
        assert sorted(changed(fixed)) == sorted(pending(report))
        assert [h["name"] for h in fixed.handlers] == ["restart-comfyui"], "one restart for four changes"
        assert _service_pid(host) != first_pid
        assert installed_version(host, "nunchaku") == NUNCHAKU_VERSION
        assert "NunchakuFluxDiTLoader" in _object_info(host, port)
        assert plan(manifest).exit_code() == 0

        # 5. a corrupted byte is only visible to --deep
        target = host.path(MODEL)
        host.run(["python3", "-c", (
            "import os, sys; p = sys.argv[1]; st = os.stat(p); f = open(p, 'r+b'); f.write(b'X'); f.close(); "
            "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))"), target])
        assert plan(manifest).exit_code() == 0
        assert pending(plan(manifest, deep=True)) == {f"download:{MODEL}": ["sha256"]}
        repaired = apply(manifest, deep=True)
        assert changed(repaired) == [f"download:{MODEL}"]
        assert [h["name"] for h in repaired.handlers] == ["restart-comfyui"]
        assert plan(manifest, deep=True).exit_code() == 0
    finally:
        if host.exists(".provision/services/comfyui.json"):
            host.run(["kill", str(_service_pid(host))], check=False)
