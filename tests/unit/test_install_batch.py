"""Which install steps on one venv share an installer run, and what the shared run asks the installer."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.agent import installers
from provisioner.agent.install_batch import companions, may_share, venv_key
from provisioner.agent.installers import IndexSettings, InstallPart, install_parts

TORCH_INDEX = "https://download.pytorch.org/whl/cu130"
MIRROR = "http://127.0.0.1:9/simple"


def pip(rid: str, packages: list[Any], **spec: Any) -> dict[str, Any]:
    return {"id": rid, "kind": "pip", "spec": {"venv": "venv", "packages": packages, **spec}}


def requirements(rid: str, **spec: Any) -> dict[str, Any]:
    return {"id": rid, "kind": "requirements", "spec": {"venv": "venv", "file": rid + "/requirements.txt", **spec}}


TORCH = pip("pip:torch", ["torch==2.11.0+cu130", "torchvision==0.26.0+cu130"], index_url=TORCH_INDEX)
COMFY = requirements("ComfyUI", constraints=["torch==2.11.0+cu130"])
PLUGIN = requirements("plugin", constraints=["torch==2.11.0+cu130"])


def test_labelled_torch_shares_a_run_with_requirements_from_another_index() -> None:
    assert may_share([TORCH, COMFY, PLUGIN])
    assert may_share([TORCH, requirements("x", index_url=MIRROR)])


def test_a_direct_url_pin_is_its_own_index_too() -> None:
    wheel = pip("pip:n", [{"requirement": "nunchaku==1.2.1", "url": "https://h/n.whl", "sha256": "ab" * 32}],
                index_url="http://elsewhere/simple")
    assert may_share([wheel, COMFY])


@pytest.mark.parametrize("torch", [
    pip("pip:torch", ["torch==2.11.0", "torchvision"], index_url=TORCH_INDEX),   # aarch64: no label
    pip("pip:torch", ["torch==2.13.*"], index_url=TORCH_INDEX),                  # a series
])
def test_a_pin_another_index_could_serve_keeps_its_index_to_itself(torch: dict[str, Any]) -> None:
    assert not may_share([torch, COMFY]), "PyPI's torch 2.11.0 would compete with the CUDA index's"
    assert may_share([pip("pip:other", ["torch==2.11.0"], index_url=TORCH_INDEX), torch])


def test_requirements_on_different_indexes_do_not_share() -> None:
    assert not may_share([COMFY, requirements("x", index_url=MIRROR)])
    assert not may_share([COMFY, requirements("x", extra_index_urls=[MIRROR])])


@pytest.mark.parametrize("alone", [
    pip("pip:nodeps", ["a==1"], no_deps=True),
    pip("pip:gone", ["a==1"], state="absent"),
    pip("pip:removes-only", [], remove_unrelated=[{"name": "nunchaku"}]),
    {"id": "git:x", "kind": "git", "spec": {"path": "venv/x"}},
])
def test_some_steps_always_run_alone(alone: dict[str, Any]) -> None:
    assert venv_key(alone) is None
    assert not may_share([alone, COMFY])


def test_other_venvs_and_installers_do_not_share() -> None:
    assert not may_share([COMFY, requirements("x", venv="other")])
    assert not may_share([COMFY, requirements("x", installer="uv")])
    assert may_share([requirements("a", installer="uv"), requirements("b", installer="uv")])


def test_companions_are_those_ready_now_in_order() -> None:
    resources = [TORCH, COMFY, requirements("y", index_url=MIRROR), PLUGIN]
    waiting_on_a_clone = {3}
    ready = lambda index, members: index not in waiting_on_a_clone  # noqa: E731
    everything = lambda index: True  # noqa: E731
    nothing = lambda index: False  # noqa: E731
    assert companions(0, resources, [1, 2, 3], ready, everything, nothing) == [1], \
        "y's index differs; the plugin's clone is not done"
    assert companions(0, resources, [1, 2, 3], lambda index, members: True, everything, nothing) == [1, 3]
    assert companions(1, [TORCH, COMFY, pip("p", ["a==1"], no_deps=True)], [2], ready, everything, nothing) == []


REMOVES_UNRELATED = pip("pip:venv#nunchaku", [], remove_unrelated=[{"name": "nunchaku"}])


def test_an_idle_install_step_between_them_rides_along_and_holds_nobody_back() -> None:
    resources = [TORCH, REMOVES_UNRELATED, COMFY, PLUGIN]
    waits = {1: {0}, 2: {0, 1}, 3: {0, 1, 2}}  # the order on one venv: each waits for those before it
    ready = lambda index, members: waits[index] <= set(members)  # noqa: E731
    works = lambda index: index != 1  # noqa: E731
    assert companions(0, resources, [1, 2, 3], ready, works, lambda index: index == 1) == [1, 2, 3]
    assert companions(0, resources, [1, 2, 3], ready, works, lambda index: False) == [], \
        "a step that is not idle (blocked, or failed at probe) holds the others back, as before"
    assert companions(0, [TORCH, REMOVES_UNRELATED], [1], ready, works, lambda index: True) == [], \
        "passengers alone make no shared run"
    other_venv = {**REMOVES_UNRELATED, "spec": {**REMOVES_UNRELATED["spec"], "venv": "other"}}
    assert companions(0, [TORCH, other_venv, COMFY], [1, 2], lambda index, members: True, works,
                      lambda index: True) == [2]


class Recorder(installers.Installer):
    def __init__(self) -> None:
        super().__init__("pip", "/venv/bin/python")
        self.calls: list[tuple[list[str], str, list[str]]] = []

    def install(self, args: list[str], what: str, stream: bool = False) -> None:
        constraints = []
        if "-c" in args:
            with open(args[args.index("-c") + 1]) as handle:
                constraints = handle.read().split()
        self.calls.append((args, what, constraints))


def part(installer: Recorder, what: str, requirements: list[str], index: IndexSettings, constraints: list[str],
         recorded: list[str], own: bool = False) -> InstallPart:
    return InstallPart(what, installer, requirements, index, constraints, lambda used: recorded.append(what),
                       own_index_only=own)


def test_one_part_installs_exactly_as_its_resource_says() -> None:
    installer, recorded = Recorder(), []  # type: ignore[var-annotated]
    install_parts([part(installer, "of torch", ["torch==2.11.0+cu130"], IndexSettings(TORCH_INDEX, [], []), [],
                        recorded, own=True)])
    assert installer.calls == [(["--index-url", TORCH_INDEX, "torch==2.11.0+cu130"], "of torch", [])]
    assert recorded == ["of torch"]


def test_a_shared_run_keeps_the_configured_index_first_and_adds_the_others() -> None:
    installer, recorded = Recorder(), []  # type: ignore[var-annotated]
    parts = [
        part(installer, "of torch", ["torch==2.11.0+cu130"], IndexSettings(TORCH_INDEX, [], []), [], recorded,
             own=True),
        part(installer, "-r ComfyUI/requirements.txt", ["-r", "/r/ComfyUI/requirements.txt"],
             IndexSettings(None, [], []), ["torch==2.11.0+cu130"], recorded),
        part(installer, "of nunchaku", ["nunchaku==1.2.1+torch2.11"], IndexSettings(None, [], ["/r/cache/wheels"]),
             ["torch==2.11.0+cu130", "numpy<3"], recorded, own=True),
    ]
    install_parts(parts)
    [(args, what, constraints)] = installer.calls
    assert "--index-url" not in args, "pip's configured index (PyPI, or the host's mirror) stays the primary one"
    assert args[:4] == ["--extra-index-url", TORCH_INDEX, "--find-links", "/r/cache/wheels"]
    assert args[4:7] == ["torch==2.11.0+cu130", "-r", "/r/ComfyUI/requirements.txt"]
    assert args[7] == "nunchaku==1.2.1+torch2.11" and args[8] == "-c"
    assert constraints == ["torch==2.11.0+cu130", "numpy<3"], "each constraint once"
    assert what == "of torch, -r ComfyUI/requirements.txt, of nunchaku"
    assert recorded == ["of torch", "-r ComfyUI/requirements.txt", "of nunchaku"], "each records after the run"


def test_a_shared_run_with_a_mirror_keeps_the_mirror_primary() -> None:
    installer = Recorder()
    install_parts([
        part(installer, "of torch", ["torch==2.11.0+cu130"], IndexSettings(TORCH_INDEX, [], []), [], [], own=True),
        part(installer, "-r a", ["-r", "a"], IndexSettings(MIRROR, [], []), [], []),
    ])
    assert installer.calls[0][0][:4] == ["--index-url", MIRROR, "--extra-index-url", TORCH_INDEX]


def test_nothing_is_recorded_when_the_shared_run_fails() -> None:
    class Failing(Recorder):
        def install(self, args: list[str], what: str, stream: bool = False) -> None:
            raise installers.ResourceFailure(f"pip install {what} failed")

    recorded: list[str] = []
    with pytest.raises(installers.ResourceFailure):
        install_parts([part(Failing(), "-r a", ["-r", "a"], IndexSettings(None, [], []), [], recorded),
                       part(Failing(), "-r b", ["-r", "b"], IndexSettings(None, [], []), [], recorded)])
    assert recorded == []
