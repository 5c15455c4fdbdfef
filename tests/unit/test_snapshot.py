"""ComfyUI-Manager snapshots read in the format comfyui-manager 4.3 writes (see provisioner/snapshot/format.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.catalog import load_catalog
from provisioner.cli import cli
from provisioner.manifest import load_manifest
from provisioner.snapshot.format import GitNode, Snapshot, SnapshotError, dump_snapshot, load_snapshot
from provisioner.snapshot.importer import import_snapshot

FIXTURES = Path(__file__).parent / "snapshots"
BACKUP = FIXTURES / "2026-11-30_12-00-00_backup.json"
NODES_ONLY = FIXTURES / "nodes-only.yaml"
REPO = Path(__file__).parents[2]
COMFYUI_0_3_64 = "a125cd84b054a57729b5eecab930ca9408719832"
NUNCHAKU_PLUGIN_V1_2_1 = "e9f7eec800ed5c3eaa87c5598614f31eef65bcbb"


def test_json_snapshot_becomes_pinned_plugins_and_pips() -> None:
    result = import_snapshot(load_snapshot(BACKUP), load_catalog())
    assert result.comfyui_ref == COMFYUI_0_3_64
    assert result.plugins == [
        # The old repository name is mapped to the catalog's entry and its current URL.
        {"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku",
         "ref": NUNCHAKU_PLUGIN_V1_2_1},
        {"name": "ComfyUI-KJNodes", "repo": "https://github.com/kijai/ComfyUI-KJNodes.git",
         "ref": "9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f"},
    ]
    assert result.packages == [
        "accelerate==1.10.1", "einops==0.8.1", "comfyui-frontend-package==1.28.8",
        {"requirement": "sageattention",
         "url": "file:///home/user/wheels/sageattention-2.2.0-cp312-cp312-linux_x86_64.whl"},
    ]
    notes = "\n".join(result.notes)
    for left_out in ("ComfyUI-Impact-Pack is disabled", "comfyui-custom-scripts 1.2.5 left out",
                     "websocket_image_save.py left out", "torch==2.10.0+cu130", "nvidia-cublas-cu13",
                     "triton==3.5.0", "nunchaku @ https://github.com/nunchaku-ai/nunchaku/releases",
                     "-e git+https://github.com/user/lib.git", "ComfyUI-nunchaku at v1.0.2 left out"):
        assert left_out in notes


def test_yaml_snapshot_under_custom_nodes_without_comfyui_or_pips() -> None:
    result = import_snapshot(load_snapshot(NODES_ONLY), load_catalog())
    assert result.comfyui_ref is None and result.packages == []
    assert result.plugins == [
        {"name": "rgthree-comfy", "repo": "git@github.com:rgthree/rgthree-comfy.git",
         "ref": "5d7c6ad64da4f5e6a3b1c3bd1ff2e7a1f0b9d0c4"},
        {"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku",
         "ref": "018086fecc19815efe08cf7b295c9aa53874fb16"},
    ]
    notes = "\n".join(result.notes)
    assert "ComfyUI_essentials is disabled" in notes and "comfyui-kjnodes 1.1.7 left out" in notes
    assert "no ComfyUI commit" in notes


def test_import_onto_a_shipped_manifest_extends_it(tmp_path: Path) -> None:
    out = tmp_path / "pinned.yaml"
    base = REPO / "manifests" / "rtx3090.yaml"
    done = CliRunner().invoke(cli, ["snapshot", "import", str(BACKUP), "--manifest", str(base), "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert (out.parent / yaml.safe_load(out.read_text())["extends"]).resolve() == base.resolve()
    assert "pinned.yaml" not in base.read_text() and "ComfyUI-KJNodes" not in base.read_text(), "base left as is"
    manifest = load_manifest(out).manifest
    assert manifest.name == "rtx3090" and manifest.gpu.arch == "sm_86", "the base's sections are kept"
    assert manifest.comfyui is not None and manifest.comfyui.ref == COMFYUI_0_3_64
    assert [(p.name, p.ref) for p in manifest.comfyui.plugins] == [
        ("ComfyUI-nunchaku", NUNCHAKU_PLUGIN_V1_2_1), ("ComfyUI-KJNodes", "9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f")]
    pip = [r for r in manifest.resources if r.kind == "pip"]
    assert len(pip) == 1 and "accelerate==1.10.1" in pip[0].packages  # type: ignore[union-attr]
    assert "torch==2.10.0+cu130" not in out.read_text().split("# ")[-1]


def test_written_snapshot_reads_back_in_both_formats(tmp_path: Path) -> None:
    snapshot = Snapshot(comfyui=COMFYUI_0_3_64,
                        git_nodes=[GitNode("https://github.com/nunchaku-ai/ComfyUI-nunchaku", NUNCHAKU_PLUGIN_V1_2_1)],
                        pips={"einops==0.8.1": "", "nunchaku": "https://example.invalid/nunchaku.whl"})
    for name in ("s.json", "s.yaml"):
        path = tmp_path / name
        path.write_text(dump_snapshot(snapshot, path))
        assert load_snapshot(path) == snapshot
    data = json.loads((tmp_path / "s.json").read_text())
    # apply_snapshot reads these three without defaults; restore_snapshot iterates git_custom_nodes.
    assert set(data) == {"comfyui", "git_custom_nodes", "cnr_custom_nodes", "file_custom_nodes", "pips"}
    assert set(yaml.safe_load((tmp_path / "s.yaml").read_text())) == {"custom_nodes"}


GOOD_HASH = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("bad.json", '{"git_custom_nodes": {\n  "https://x/y": {"hash": "abc"\n}', "bad.json:3:2: invalid JSON"),
    ("hash.json", '{"git_custom_nodes": {\n  "https://github.com/a/b": {"hash": "main", "disabled": false}}}',
     "hash.json:2:30: git_custom_nodes.https://github.com/a/b.hash: 'main' is not a git commit"),
    ("url.json", '{"git_custom_nodes": {"not a url": {"hash": "' + GOOD_HASH + '"}}}',
     "git_custom_nodes.not a url: URL 'not a url' must not contain spaces"),
    ("list.yaml", "custom_nodes:\n  git_custom_nodes: [a, b]\n",
     "list.yaml:2:3: custom_nodes.git_custom_nodes: must be a mapping of repository URL"),
    ("typo.yaml", "custom_nodes:\n  git_custom_nodes: {}\n  pip: {}\n",
     "typo.yaml:3:3: custom_nodes.pip: unknown snapshot key 'pip'"),
    ("pips.json", '{"git_custom_nodes": {}, "pips": ["einops==0.8.1"]}', "pips: must be a mapping"),
    ("other.json", '{"last_node_id": 9, "nodes": []}', "no snapshot keys found"),
    ("array.json", "[1, 2]", "a ComfyUI-Manager snapshot is a mapping"),
])
def test_malformed_snapshots_name_file_and_field(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SnapshotError) as caught:
        load_snapshot(path)
    assert expected in str(caught.value)
    done = CliRunner().invoke(cli, ["snapshot", "import", str(path)])
    assert done.exit_code == 1 and expected in done.output and "Traceback" not in done.output


def test_unreadable_input_goes_through_the_bounded_loader(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="is a directory"):
        load_snapshot(tmp_path)
    (tmp_path / "latin1.json").write_bytes(b'{"comfyui": "caf\xe9"}')
    with pytest.raises(SnapshotError, match="latin1.json:1:.*invalid UTF-8"):
        load_snapshot(tmp_path / "latin1.json")
    done = CliRunner().invoke(cli, ["snapshot", "export", str(REPO / "manifests" / "local.yaml"), "-o", "s.txt"])
    assert done.exit_code == 1 and "restores only .json and .yaml" in done.output


@pytest.mark.parametrize("args", [["snapshot"], ["snapshot", "nosuch"], ["snapshot", "import"],
                                  ["snapshot", "export"], ["snapshot", "import", "a.json", "--bogus"]])
def test_snapshot_usage_errors_exit_1(args: list[str]) -> None:
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 1, (args, done.output)
    assert "No such command 'snapshot'" not in done.output and "snapshot" in done.output


def test_export_of_a_host_without_comfyui_says_so(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"name: m\ntarget: {{connection: local, root: {tmp_path / 'root'}}}\n")
    (tmp_path / "root").mkdir()
    done = CliRunner().invoke(cli, ["snapshot", "export", str(manifest)])
    assert done.exit_code == 1 and "there is no ComfyUI folder to snapshot" in done.output, done.output
