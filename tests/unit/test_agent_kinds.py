"""The agent loads each resource kind on first use; its list of kinds must match the manifest's."""

from __future__ import annotations

import pytest

from provisioner.agent import dependencies
from provisioner.agent.kinds import NAMES, kind
from provisioner.agent.main import classify
from provisioner.agent.protocol import Change, Context, ResourceFailure
from provisioner.resources import RESOURCE_KINDS


def test_every_manifest_kind_has_an_agent_module() -> None:
    assert sorted(NAMES) == sorted(RESOURCE_KINDS)
    for name in NAMES:
        module = kind(name)
        assert callable(module.probe) and callable(module.diff) and callable(module.apply)


def test_an_unknown_kind_is_a_failure_naming_the_known_ones() -> None:
    with pytest.raises(ResourceFailure, match="unknown resource kind 'tarball'.*directory"):
        kind("tarball")


def _pip_spec(*packages: str, **extra: object) -> dict[str, object]:
    return {"venv": "venv", "packages": list(packages), **extra}


def _observed(**versions: str) -> dict[str, object]:
    return {"venv": True, "installed": {name: {"name": name, "version": v, "url": None, "sha256": None}
                                        for name, v in versions.items()}}


def test_pins_follow_pep_440_local_labels() -> None:
    pip = kind("pip")
    ctx = Context("/nonexistent")
    assert pip.diff(_pip_spec("torch==2.10.0"), _observed(torch="2.10.0+cu130"), ctx) == []
    assert pip.diff(_pip_spec("torch==2.13.0"), _observed(torch="2.13.0+cpu"), ctx) == []
    assert pip.diff(_pip_spec("nunchaku==1.3.0.dev20260213"), _observed(nunchaku="1.3.0dev20260213"), ctx) == []
    [change] = pip.diff(_pip_spec("torch==2.10.0+cu130"), _observed(torch="2.10.0+cpu"), ctx)
    assert (change["old"], change["new"]) == ("2.10.0+cpu", "2.10.0+cu130")


def test_a_converged_resource_that_lost_something_is_drifted_not_created() -> None:
    resource = {"id": "pip:venv#demo", "digest": "d1"}
    missing = [Change("package.demo", None, "1.0.0", "not installed", "create")]
    assert classify(resource, missing, {"pip:venv#demo": "d1"}) == "drifted"
    assert classify(resource, missing, {}) == "create", "never applied here: a first creation"
    assert classify(resource, missing, {"pip:venv#demo": "d0"}) == "create"
    moved = [Change("package.demo", "0.9", "1.0.0", "installed version 0.9, pinned 1.0.0")]
    assert classify(resource, moved, {"pip:venv#demo": "d0"}) == "change", "the spec changed since"
    assert classify(resource, [], {}) == "ok"


def _res(rid: str, kind_name: str, **spec: object) -> dict[str, object]:
    return {"id": rid, "kind": kind_name, "spec": spec}


def test_a_failure_blocks_only_what_lives_in_or_reads_from_it() -> None:
    venv = _res("venv:venv", "venv", path="venv")
    torch = _res("pip:venv#torch", "pip", venv="venv", packages=["torch==2.10.0"])
    wheel = _res("download:cache/wheels/n.whl", "download", path="cache/wheels/n.whl")
    nunchaku = _res("pip:venv#nunchaku", "pip", venv="venv", packages=["n==1"], find_links=["cache/wheels"])
    comfy = _res("git:ComfyUI", "git", path="ComfyUI")
    reqs = _res("requirements:ComfyUI/requirements.txt", "requirements", venv="venv",
                file="ComfyUI/requirements.txt")
    plugin = _res("git:ComfyUI/custom_nodes/P", "git", path="ComfyUI/custom_nodes/P")
    model = _res("download:ComfyUI/models/m", "download", path="ComfyUI/models/m")
    env = _res("envfile:comfyui.env", "envfile", path="comfyui.env")
    service = _res("service:comfyui", "service", argv=["venv/bin/python", "main.py"], cwd="ComfyUI",
                   env_file="comfyui.env")
    command = _res("command:c", "command", argv=["true"], creates="x")

    assert dependencies.blocker(torch, [venv]) == "venv:venv"
    assert dependencies.blocker(nunchaku, [torch]) == "pip:venv#torch", "one venv: pins interact"
    assert dependencies.blocker(nunchaku, [wheel]) == "download:cache/wheels/n.whl", "its find-links tree"
    assert dependencies.blocker(reqs, [comfy]) == "git:ComfyUI"
    assert dependencies.blocker(plugin, [comfy]) == "git:ComfyUI"
    assert dependencies.blocker(service, [env]) == "envfile:comfyui.env"
    assert dependencies.blocker(service, [nunchaku]) == "pip:venv#nunchaku", "it runs in that venv"
    for unrelated in (comfy, plugin, env, service, wheel):
        assert dependencies.blocker(unrelated, [model]) is None, unrelated["id"]
    assert dependencies.blocker(comfy, [torch]) is None
    assert dependencies.blocker(service, [plugin]) is None, "ComfyUI starts without a plugin"
    assert dependencies.blocker(env, [command]) == "command:c", "a command may touch anything"
    assert dependencies.blocker(command, [model]) == "download:ComfyUI/models/m"
