"""Snapshot export from a host provisioned for real, then import: the same commits and package pins."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from provisioner.cli import cli
from provisioner.manifest import load_manifest
from tests.support.gitrepos import make_upstream
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import converge, plan


def test_export_then_import_keeps_every_pin(tmp_path: Path, package_index: str) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    upstreams = tmp_path / "upstreams"
    comfyui = make_upstream(upstreams, "ComfyUI")
    # ComfyUI's own .gitignore (Comfy-Org/ComfyUI) keeps custom_nodes/ out of its checkout, all but the example.
    comfy_commit = comfyui.commit({"main.py": "print('ComfyUI')\n", ".gitignore": "/models/\n/custom_nodes/\n"
                                   "!custom_nodes/example_node.py.example\n",
                                   "custom_nodes/example_node.py.example": "# example\n"}, "0.3.64")
    nunchaku_plugin = make_upstream(upstreams, "ComfyUI-nunchaku")
    nunchaku_plugin.commit({"__init__.py": "NODE_CLASS_MAPPINGS = {}\n"}, "release", tag="v1.2.1")
    nodes = make_upstream(upstreams, "ComfyUI-KJNodes")
    nodes_commit = nodes.commit({"__init__.py": "NODE_CLASS_MAPPINGS = {}\n"}, "first")
    nodes.commit({"__init__.py": "NODE_CLASS_MAPPINGS = {'Later': None}\n"}, "later")  # main moves on
    old = make_upstream(upstreams, "ComfyUI-Old")
    old_commit = old.commit({"__init__.py": "\n"}, "old")

    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "git", "path": "ComfyUI", "repo": comfyui.url, "ref": "main"},
        {"kind": "git", "path": "ComfyUI/custom_nodes/ComfyUI-nunchaku", "repo": nunchaku_plugin.url, "ref": "v1.2.1"},
        {"kind": "git", "path": "ComfyUI/custom_nodes/ComfyUI-KJNodes", "repo": nodes.url, "ref": nodes_commit},
        {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": package_index},
    ]})
    converge(manifest)
    # What a ComfyUI-Manager user leaves beside them: a single-file node and a disabled node pack.
    host.run(["git", "clone", "-q", old.url, host.path("ComfyUI/custom_nodes/ComfyUI-Old.disabled")])
    Path(host.path("ComfyUI/custom_nodes/websocket_image_save.py")).write_text("NODE_CLASS_MAPPINGS = {}\n")
    # A registry install as ComfyUI-Manager leaves it (cnr_utils.read_cnr_info): .tracking, no .git.
    registry = Path(host.path("ComfyUI/custom_nodes/comfyui-custom-scripts"))
    registry.mkdir()
    (registry / ".tracking").write_text("__init__.py\n")
    (registry / "pyproject.toml").write_text('[project]\nname = "ComfyUI-Custom-Scripts"\nversion = "1.2"\n'
                                             '[project.urls]\nRepository = "https://github.com/pysssss/x"\n')
    Path(host.path("ComfyUI/custom_nodes/scratch")).mkdir()

    snapshot = tmp_path / "snapshot.json"
    done = CliRunner().invoke(cli, ["snapshot", "export", str(manifest), "-o", str(snapshot)])
    assert done.exit_code == 0, done.output
    assert "custom_nodes/scratch is not a git checkout: left out" in done.output
    data = json.loads(snapshot.read_text())
    assert data == {
        "comfyui": comfy_commit,
        "git_custom_nodes": {
            nodes.url: {"hash": nodes_commit, "disabled": False},
            nunchaku_plugin.url: {"hash": nunchaku_plugin.tags["v1.2.1"], "disabled": False},
            old.url: {"hash": old_commit, "disabled": True},
        },
        "cnr_custom_nodes": {"comfyui-custom-scripts": "1.2.0"},
        "file_custom_nodes": [{"filename": "websocket_image_save.py", "disabled": False}],
        "pips": {"provdemo==1.0.0": "", "provdep==1.0.0": ""},
    }
    exported_yaml = tmp_path / "snapshot.yaml"
    done = CliRunner().invoke(cli, ["snapshot", "export", str(manifest), "-o", str(exported_yaml)])
    assert done.exit_code == 0 and yaml.safe_load(exported_yaml.read_text()) == {"custom_nodes": data}

    imported = tmp_path / "imported.yaml"
    done = CliRunner().invoke(cli, ["snapshot", "import", str(snapshot), "-o", str(imported)])
    assert done.exit_code == 0, done.output
    for left_out in ("ComfyUI-Old.git is disabled", "websocket_image_save.py left out",
                     "registry node comfyui-custom-scripts 1.2.0 left out"):
        assert left_out in done.output
    pinned = load_manifest(imported).manifest
    assert pinned.comfyui is not None and pinned.comfyui.ref == comfy_commit
    plugins = {p.name: (p.repo, p.ref) for p in pinned.comfyui.plugins}
    assert plugins == {"ComfyUI-nunchaku": (nunchaku_plugin.url, nunchaku_plugin.tags["v1.2.1"]),
                       "ComfyUI-KJNodes": (nodes.url, nodes_commit)}
    [pip] = [r.model_dump(mode="json") for r in pinned.resources]
    assert pip["packages"] == ["provdemo==1.0.0", "provdep==1.0.0"] and pip["no_deps"] is True

    # The host already is what the imported pins say: as resources, they plan with no change at all.
    # The venv stays declared: a resource dropped from the manifest would be planned for removal.
    check = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "git", "path": "ComfyUI", "repo": comfyui.url, "ref": pinned.comfyui.ref},
        *({"kind": "git", "path": f"ComfyUI/custom_nodes/{name}", "repo": repo, "ref": ref}
          for name, (repo, ref) in plugins.items()),
        {**pip, "index_url": package_index},
    ]}, name="check.yaml")
    report = plan(check)
    assert report.exit_code() == 0, [r for r in report.resources if r["status"] != "ok"]
