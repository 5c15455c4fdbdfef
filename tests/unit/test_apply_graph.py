"""The apply's dependency graph: which step waits for which, derived from kinds and paths, and `requires`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.agent.graph import build
from provisioner.agent.protocol import ResourceFailure
from provisioner.agent.schedule import limits
from provisioner.errors import ProvisionError
from provisioner.expand import expand
from provisioner.manifest import load_manifest


def res(rid: str, kind: str, requires: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"id": rid, "kind": kind, "spec": spec}
    if requires:
        resource["requires"] = requires
    return resource


def waits(resources: list[dict[str, Any]]) -> dict[str, list[str]]:
    graph = build(resources)
    return {r["id"]: [resources[j]["id"] for j in graph[i]] for i, r in enumerate(resources)}


STACK = [
    res("directory:models", "directory", path="models"),
    res("venv:venv", "venv", path="venv"),
    res("pip:torch", "pip", venv="venv", packages=["torch"]),
    res("git:ComfyUI", "git", path="ComfyUI", url="file:///x"),
    res("requirements:ComfyUI", "requirements", venv="venv", file="ComfyUI/requirements.txt"),
    res("git:plugin", "git", path="ComfyUI/custom_nodes/plugin", url="file:///y"),
    res("download:models/a", "download", path="models/a.safetensors", url="http://h/a"),
    res("download:models/b", "download", path="models/b.safetensors", url="http://h/b"),
    res("download:wheels/n", "download", path="wheels/n.whl", url="http://h/n"),
    res("pip:nunchaku", "pip", venv="venv", packages=["nunchaku"], find_links=["wheels"]),
    res("service:comfyui", "service", name="comfyui", cwd="ComfyUI", argv=["venv/bin/python", "main.py"]),
]


def test_edges_follow_paths_and_kinds() -> None:
    got = waits(STACK)
    assert got["venv:venv"] == [] and got["git:ComfyUI"] == [] and got["directory:models"] == []
    assert got["pip:torch"] == ["venv:venv"], "a venv before its packages"
    # The requirements file is in the checkout; pip steps on one venv never run at once.
    assert got["requirements:ComfyUI"] == ["venv:venv", "pip:torch", "git:ComfyUI"]
    assert got["git:plugin"] == ["git:ComfyUI"], "a plugin cloned inside the checkout waits for it"
    assert got["download:models/a"] == ["directory:models"] and got["download:models/b"] == ["directory:models"]
    assert got["download:wheels/n"] == []
    assert got["pip:nunchaku"] == ["venv:venv", "pip:torch", "requirements:ComfyUI", "download:wheels/n"], (
        "the wheel in its find-links folder, and the earlier pip steps on the venv")
    assert got["service:comfyui"] == [r["id"] for r in STACK[:-1]], "a service starts after everything before it"


def test_downloads_and_clones_run_alongside_the_installs() -> None:
    got = waits(STACK)
    for independent in ("git:ComfyUI", "download:models/a", "download:models/b"):
        assert "pip:torch" not in got[independent] and "venv:venv" not in got[independent]
    assert "download:models/a" not in got["download:models/b"]


def test_a_command_waits_for_everything_before_and_everything_after_waits_for_it() -> None:
    resources = [
        res("file:a", "file", path="a"),
        res("command:setup", "command", argv=["true"]),
        res("file:b", "file", path="b"),
    ]
    assert waits(resources) == {"file:a": [], "command:setup": ["file:a"], "file:b": ["command:setup"]}


def test_nesting_counts_either_way_round() -> None:
    # A file listed before the folder that holds it still never runs beside it.
    resources = [res("file:d/x", "file", path="d/x"), res("directory:d", "directory", path="d")]
    assert waits(resources)["directory:d"] == ["file:d/x"]


def test_requires_adds_an_edge_in_any_direction() -> None:
    resources = [
        res("file:a", "file", requires=["file:b"], path="a"),
        res("file:b", "file", path="b"),
    ]
    assert waits(resources) == {"file:a": ["file:b"], "file:b": []}


def test_a_cycle_is_refused_naming_every_resource_on_it() -> None:
    resources = [
        res("file:a", "file", requires=["file:c"], path="a"),
        res("file:b", "file", requires=["file:a"], path="b"),
        res("file:c", "file", requires=["file:b"], path="c"),
        res("file:d", "file", path="d"),
    ]
    with pytest.raises(ResourceFailure) as caught:
        build(resources)
    message = str(caught.value)
    assert "cycle" in message and "remove one of these requires" in message
    assert "file:a -> file:c -> file:b -> file:a" in message
    assert "file:d" not in message


def test_a_cycle_through_a_derived_edge_is_refused() -> None:
    # The venv comes first, so its package waits for it; the venv requiring the package closes the loop.
    resources = [
        res("venv:venv", "venv", requires=["pip:venv"], path="venv"),
        res("pip:venv", "pip", venv="venv", packages=["x"]),
    ]
    with pytest.raises(ResourceFailure, match="venv:venv -> pip:venv -> venv:venv"):
        build(resources)


def test_unknown_and_self_requires_are_refused() -> None:
    with pytest.raises(ResourceFailure, match="file:a requires file:zz, which is not a resource"):
        build([res("file:a", "file", requires=["file:zz"], path="a")])
    with pytest.raises(ResourceFailure, match="file:a requires itself"):
        build([res("file:a", "file", requires=["file:a"], path="a")])


@pytest.mark.parametrize("options", [{"parallel": 0}, {"parallel": "4"}, {"parallel_downloads": True},
                                     {"parallel_downloads": -1}])
def test_limits_are_whole_numbers_of_at_least_one(options: dict[str, Any]) -> None:
    with pytest.raises(ResourceFailure, match="must be a whole number >= 1"):
        limits(options)


def test_limits_default() -> None:
    assert limits({}) == (6, 4)
    assert limits({"parallel": 1, "parallel_downloads": 2}) == (1, 2)


def _manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(f"name: t\ntarget: {{connection: local, root: {tmp_path / 'root'}}}\n{body}")
    return path


def test_the_controller_refuses_a_requires_cycle_before_connecting(tmp_path: Path) -> None:
    path = _manifest(tmp_path, (
        "resources:\n"
        "  - {kind: file, path: a, content: x, requires: ['file:b']}\n"
        "  - {kind: file, path: b, content: y, requires: ['file:a']}\n"))
    with pytest.raises(ProvisionError, match=r"cycle: file:a -> file:b -> file:a"):
        expand(load_manifest(path))


def test_the_controller_names_the_line_of_an_unknown_requires(tmp_path: Path) -> None:
    path = _manifest(tmp_path, "resources:\n  - {kind: file, path: a, content: x, requires: ['git:nope']}\n")
    with pytest.raises(ProvisionError) as caught:
        expand(load_manifest(path))
    message = str(caught.value)
    assert "m.yaml:4" in message and "requires 'git:nope', which no resource is" in message, message


def test_requires_does_not_change_a_resource_digest(tmp_path: Path) -> None:
    plain = expand(load_manifest(_manifest(tmp_path, (
        "resources:\n  - {kind: file, path: a, content: x}\n  - {kind: file, path: b, content: y}\n"))))
    ordered = expand(load_manifest(_manifest(tmp_path, (
        "resources:\n  - {kind: file, path: a, content: x, requires: ['file:b']}\n"
        "  - {kind: file, path: b, content: y}\n"))))
    assert [r.digest for r in plain.resources] == [r.digest for r in ordered.resources]
    assert ordered.payload()["resources"][0]["requires"] == ["file:b"]
    assert "requires" not in plain.payload()["resources"][0]


def test_log_lines_of_a_step_carry_its_resource_id(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import threading

    from provisioner.agent.protocol import log, set_step

    def step(rid: str) -> None:
        set_step(rid)
        log(f"from {rid}")
        set_step(None)

    threads = [threading.Thread(target=step, args=(rid,)) for rid in ("pip:venv", "git:ComfyUI")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log("from the main thread")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((e.get("id"), e["message"]) for e in lines if e.get("id")) == [
        ("git:ComfyUI", "from git:ComfyUI"), ("pip:venv", "from pip:venv")]
    assert next(e for e in lines if e["message"] == "from the main thread").get("id") is None
