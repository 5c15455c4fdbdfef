"""`provision apply manifests/docker.yaml`: the whole stack built into an image, from stand-in upstreams
reached through a mirrors file (the manifest itself names GitHub, PyTorch and Hugging Face)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.stack_upstreams import NUNCHAKU_VERSION, TORCH_CUDA_VERSION, StackUpstreams, stack_upstreams

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.docker


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[StackUpstreams]:
    with stack_upstreams(tmp_path / "upstreams") as built:
        yield built


def _provision(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=900)


def _shipped_models(name: str) -> list[dict[str, object]]:
    return list(yaml.safe_load((REPO / "manifests" / name).read_text())["models"])


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)


# It may build the base image (debootstrap alone is allowed 900 s) and runs an apply allowed 900 s: above
# pytest's default 300 s, so that those inner limits, with their messages, are what end a slow run.
@pytest.mark.timeout(1200)
@pytest.mark.usefixtures("image_build_turn")
def test_docker_manifest_builds_the_stack_into_an_image(request: pytest.FixtureRequest, tmp_path: Path,
                                                        upstreams: StackUpstreams) -> None:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    from tests.support.dockerd import BASE_IMAGE, docker_session

    docker_session(request.config, request.getfixturevalue("tmp_path_factory").getbasetemp())
    tag, again = "provision-test-stack:built", "provision-test-stack:again"
    request.addfinalizer(lambda: _docker("rmi", "-f", tag, again))
    env = {"PROVISION_MIRRORS": str(upstreams.mirrors_file(tmp_path / "mirrors.yaml"))}
    # The test base image is Debian's (Python 3.11) instead of python:3.12-bookworm, which needs a registry.
    overlay = {"extends": str(REPO / "manifests" / "docker.yaml"), "name": "docker-test",
               "target": {"connection": f"docker-image://{BASE_IMAGE}", "commit_tag": tag},
               "python": {"version": f"{sys.version_info[0]}.{sys.version_info[1]}"},
               "vars": {"pip_index_url": upstreams.index},
               # rtx4090.yaml's own models; the rest of their workflow set (CLIP-L, the VAE) is pinned to the
               # real files' sha256, which no stand-in Hub can serve.
               "models": [{**model, "companions": False} for model in _shipped_models("rtx4090.yaml")]}
    (tmp_path / "build.yaml").write_text(yaml.safe_dump(overlay))

    built = _provision("apply", "build.yaml", cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "Converged" in built.stdout

    probe = "import importlib.metadata as m; print(m.version('nunchaku'), m.version('torch'))"
    inside = _docker("run", "--rm", "--network", "none", tag, "/opt/comfy/venv/bin/python", "-c", probe)
    assert inside.stdout.split() == [NUNCHAKU_VERSION, TORCH_CUDA_VERSION], inside.stderr
    listing = _docker("run", "--rm", "--network", "none", tag, "ls", "/opt/comfy/ComfyUI/custom_nodes",
                      "/opt/comfy/ComfyUI/models/diffusion_models")
    assert "ComfyUI-nunchaku" in listing.stdout and "svdq-int4_r32-flux.1-dev.safetensors" in listing.stdout

    overlay["target"] = {"connection": f"docker-image://{tag}", "commit_tag": again}
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(overlay))
    second = _provision("apply", "again.yaml", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Applied: 0 changed" in second.stdout
