"""`provision workflow analyze/import` on the official ComfyUI workflows (comfyui-workflow-templates-json)."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from provisioner.catalog import load_catalog
from provisioner.cli import cli
from provisioner.manifest import load_manifest
from provisioner.workflow.analyze import analyze
from provisioner.workflow.nodes import load_node_catalog
from provisioner.workflow.parse import WorkflowError, load_workflow, parse_workflow
from provisioner.workflow.suggest import Host

TEMPLATES = Path(str(resources.files("comfyui_workflow_templates_json") / "templates"))
REPO = Path(__file__).resolve().parents[2]
FACTS = Path(__file__).resolve().parent / "facts"
#: The package's catalogue files beside the workflows: JSON, but not workflows.
NOT_WORKFLOWS = {"fuse_options.json", "index_logo.json"}

# Templates whose loader widget names another file than the node's own `properties.models` says: the
# widget is what ComfyUI loads, so the analyzer follows it (the metadata is stale).
STALE_METADATA = {
    ("image_moss_image_color_depth_control.json", "moss_image_sft_int8_convrot_attn.safetensors"),
    ("video_wan_animate2_distilled.json", "wan_animate_2_int8_convrot.safetensors"),
}


def _workflows() -> list[Path]:
    return sorted(p for p in TEMPLATES.glob("*.json") if not p.name.startswith("index") and p.name not in NOT_WORKFLOWS)


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_every_template_workflow_is_analyzed_in_bounded_time() -> None:
    catalog = load_catalog()
    paths = _workflows()
    assert len(paths) >= 600, f"only {len(paths)} workflows in {TEMPLATES}"
    started = time.monotonic()
    subgraphs = files = 0
    for path in paths:
        result = analyze(load_workflow(path), catalog, Host("sm_86", 24576))
        assert result.format == "ui" and result.nodes, path.name
        assert all(m.name and m.folder for m in result.models), path.name
        subgraphs += any(":" in m.node for m in result.models)
        files += len(result.models)
    assert time.monotonic() - started < 30
    # Most templates keep their loaders inside a subgraph: they are found there.
    assert subgraphs > 150 and files > 1000


def test_loader_widgets_name_the_files_and_folders_the_template_metadata_lists() -> None:
    loaders = load_node_catalog().loaders
    compared = 0
    for path in _workflows():
        workflow = load_workflow(path)
        found = {(m.node, m.name, m.folder) for m in _models(workflow) if m.source == "widget"}
        for node in workflow.nodes:
            if node.class_type not in loaders or not node.models:
                continue
            listed = {(m.name, m.directory) for m in node.models}
            widget = {(name, folder) for node_path, name, folder in found if node_path == node.path}
            if any((path.name, name) in STALE_METADATA for name, _ in widget):
                assert widget != listed
                continue
            assert widget == listed, f"{path.name} node {node.path} {node.class_type}"
            compared += 1
    assert compared > 900


def _models(workflow: Any) -> Any:
    return analyze(workflow, load_catalog()).models


def test_flux_template_names_the_nunchaku_loader_and_the_svdq_file_for_the_host() -> None:
    workflow = load_workflow(TEMPLATES / "flux_dev_full_text_to_image.json")
    files = {(m.folder, m.name) for m in _models(workflow)}
    assert {("diffusion_models", "flux1-dev.safetensors"), ("text_encoders", "clip_l.safetensors"),
            ("text_encoders", "t5xxl_fp16.safetensors"), ("vae", "ae.safetensors")} <= files
    small = analyze(workflow, load_catalog(), Host("sm_86", 12 * 1024)).replacements
    assert [(r.replaces, r.node, r.file, r.cpu_offload) for r in small] == [
        ("UNETLoader", "NunchakuFluxDiTLoader", "svdq-int4_r32-flux.1-dev.safetensors", "enable")]
    assert small[0].repo == "nunchaku-tech/nunchaku-flux.1-dev" and "6.8 GB" in small[0].expected_memory
    # The shipped RTX 4090 manifest installs that svdq file (rank written out): the workflow is to switch.
    shipped = _run("workflow", "analyze", str(TEMPLATES / "flux_dev_full_text_to_image.json"), "--manifest",
                   str(REPO / "manifests/rtx4090.yaml"), "--facts", str(FACTS / "rtx4090.json"), "--json")
    [switch] = [lack for lack in json.loads(shipped.output)["lacks"] if "flux1-dev.safetensors" in lack["what"]]
    assert switch["kind"] == "workflow" and "NunchakuFluxDiTLoader" in switch["fix"]
    blackwell = analyze(workflow, load_catalog(), Host("sm_120", 32 * 1024)).replacements
    assert [(r.file, r.cpu_offload) for r in blackwell] == [("svdq-fp4_r32-flux.1-dev.safetensors", "disable")]


def test_qwen_image_edit_template_with_lightning_lora_gets_the_merged_svdq_file() -> None:
    result = _run("workflow", "analyze", str(TEMPLATES / "image_qwen_image_edit_2509.json"),
                  "--facts", str(FACTS / "rtx3090.json"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    [replacement] = data["replacements"]
    assert replacement["node"] == "NunchakuQwenImageDiTLoader"
    assert replacement["file"] == "svdq-int4_r32-qwen-image-edit-2509-lightningv2.0-4steps.safetensors"
    assert replacement["merged_loras"] == ["Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors"]
    assert replacement["cpu_offload"] == "disable" and replacement["replaces_file"] == \
        "qwen_image_edit_2509_fp8_e4m3fn.safetensors"
    text = _run("workflow", "analyze", str(TEMPLATES / "image_qwen_image_edit_2509.json"), "--gpu", "RTX 3060")
    assert "NunchakuQwenImageDiTLoader" in text.output and "cpu_offload: enable" in text.output
    assert "split_files/vae/qwen_image_vae.safetensors" in text.output


def test_api_format_saved_inside_a_template_is_read() -> None:
    data = json.loads((TEMPLATES / "video_ltx2_t2v.json").read_text())
    workflow = parse_workflow(data["extra"]["prompt"], "video_ltx2_t2v.json#extra.prompt")
    assert workflow.format == "api"
    checkpoints = {m.name for m in _models(workflow) if m.folder == "checkpoints" and m.source == "widget"}
    loader = next(n for n in data["extra"]["prompt"].values() if n["class_type"] == "CheckpointLoaderSimple")
    assert checkpoints == {loader["inputs"]["ckpt_name"]}


def test_nunchaku_nodes_are_the_plugins_and_the_manifest_gaps_are_named(tmp_path: Path) -> None:
    # The API workflow ComfyUI-nunchaku's loader makes: node inputs as its INPUT_TYPES name them.
    api = {"1": {"class_type": "NunchakuQwenImageDiTLoader",
                 "inputs": {"model_name": "svdq-int4_r128-qwen-image-edit-2509-lightningv2.0-4steps.safetensors",
                            "cpu_offload": "disable"}},
           "2": {"class_type": "VAELoader", "inputs": {"vae_name": "qwen_image_vae.safetensors"}},
           "3": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1}}}
    workflow_path = tmp_path / "api.json"
    workflow_path.write_text(json.dumps({"prompt": api}))
    old = tmp_path / "old.yaml"
    old.write_text("name: old\ncomfyui:\n  ref: v0.3.64\n  plugins:\n    - name: ComfyUI-nunchaku\n"
                   "      repo: https://github.com/nunchaku-ai/ComfyUI-nunchaku\n      ref: v0.3.4\n")
    result = _run("workflow", "analyze", str(workflow_path), "--manifest", str(old), "--json")
    assert result.exit_code == 2, result.output
    data = json.loads(result.output)
    [use] = [n for n in data["nodes"] if n["class_type"] == "NunchakuQwenImageDiTLoader"]
    assert use["provider"] == "plugin" and use["plugin_versions"][0] == "1.0.0"
    kinds = {(lack["kind"], lack["what"].split(" ")[0]) for lack in data["lacks"]}
    assert ("plugin", "NunchakuQwenImageDiTLoader") in kinds and ("comfyui", "ComfyUI") in kinds
    assert ("model", "diffusion_models/svdq-int4_r128-qwen-image-edit-2509-lightningv2.0-4steps.safetensors") in kinds
    # Without a URL in the workflow, the catalog names the svdq file's repository.
    emitted = yaml.safe_load(_run("workflow", "analyze", str(workflow_path), "--emit").output)
    assert emitted["comfyui"]["plugins"][0]["name"] == "ComfyUI-nunchaku"
    assert {"repo": "nunchaku-tech/nunchaku-qwen-image-edit-2509", "folder": "diffusion_models",
            "file": "svdq-int4_r128-qwen-image-edit-2509-lightningv2.0-4steps.safetensors"} in emitted["models"]
    # The shipped RTX 3090 manifest has this plugin, the svdq file and a new enough ComfyUI.
    shipped = _run("workflow", "analyze", str(workflow_path), "--manifest", str(REPO / "manifests/rtx3090.yaml"),
                   "--json")
    lacks = json.loads(shipped.output)["lacks"]
    assert not [lack for lack in lacks if lack["kind"] in ("plugin", "comfyui")]
    assert not [lack for lack in lacks if "svdq" in lack["what"]]


def test_emit_and_import_round_trip_into_a_manifest_that_validates(tmp_path: Path) -> None:
    template = str(TEMPLATES / "image_qwen_image_edit_2509.json")
    emitted = _run("workflow", "analyze", template, "--emit", "--nunchaku")
    assert emitted.exit_code == 0, emitted.output
    sections = yaml.safe_load(emitted.output)
    standalone = tmp_path / "emitted.yaml"
    standalone.write_text(yaml.safe_dump({"name": "emitted", **sections}))
    manifest = load_manifest(standalone).manifest
    assert manifest.comfyui is not None and manifest.comfyui.plugins[0].name == "ComfyUI-nunchaku"
    assert {m.folder for m in manifest.models} == {"diffusion_models", "vae", "text_encoders"}

    user = tmp_path / "host.yaml"
    original = ("# my box\nname: host   # keep this comment\ncomfyui:\n  ref: v0.7.0  # pinned\n"
                "models:\n  - repo: Comfy-Org/Qwen-Image_ComfyUI\n"
                "    file: split_files/vae/qwen_image_vae.safetensors\n    folder: vae\n"
                "checks:\n  smoke: false\n")
    user.write_text(original)
    imported = _run("workflow", "import", template, str(user), "--nunchaku")
    assert imported.exit_code == 0, imported.output
    assert "+ plugin ComfyUI-nunchaku" in imported.output and "= vae/qwen_image_vae.safetensors" in imported.output
    text = user.read_text()
    assert text.startswith("# my box\nname: host   # keep this comment\ncomfyui:\n  ref: v0.7.0  # pinned\n")
    assert text.endswith("checks:\n  smoke: false\n")
    loaded = load_manifest(user).manifest
    assert loaded.comfyui is not None and [p.name for p in loaded.comfyui.plugins] == ["ComfyUI-nunchaku"]
    assert len(loaded.models) == 3 and loaded.checks.smoke is False
    again = _run("workflow", "import", template, str(user), "--nunchaku")
    assert "nothing to add" in again.output and user.read_text() == text
    after = _run("workflow", "analyze", template, "--manifest", str(user), "--json")
    lacks = json.loads(after.output)["lacks"]
    assert not [lack for lack in lacks if lack["kind"] in ("model", "plugin")], lacks
    # The workflow itself still loads the FP8 file and the LoRA: it is told to switch to what was installed.
    fixes = [lack["fix"] for lack in lacks if lack["kind"] == "workflow"]
    assert len(fixes) == 2 and "with NunchakuQwenImageDiTLoader (cpu_offload: " in fixes[0]
    assert "has this LoRA merged in" in fixes[1]


@pytest.mark.parametrize(("content", "expected"), [
    ("[]", "not a ComfyUI workflow"),
    ('{"nodes": 3}', "not a ComfyUI workflow"),
    ('{"name": "x"', "1:13: not valid JSON"),
    ('{"1": {"class_type": 7, "inputs": {}}}', "node 1: 'class_type' must be a node class name"),
    ('{"nodes": [{"id": 1, "type": "S"}], "definitions": {"subgraphs": [{"id": "S", "nodes": [{"id": 2, '
     '"type": "T"}]}, {"id": "T", "nodes": [{"id": 3, "type": "S"}]}]}}', "subgraph S contains itself"),
    (json.dumps({"nodes": [{"id": 1, "type": "G0"}], "definitions": {"subgraphs": [
        {"id": f"G{level}", "nodes": [{"id": i, "type": f"G{level + 1}"} for i in range(10)]} for level in range(6)
    ]}}), "more than 20000 nodes once subgraphs are expanded"),
])
def test_a_file_that_is_not_a_workflow_is_refused_with_the_file_and_the_reason(
        tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(WorkflowError, match=expected):
        load_workflow(path)
    result = CliRunner().invoke(cli, ["workflow", "analyze", str(path)])
    assert result.exit_code == 1 and str(path) in result.output and expected in result.output
    assert "Traceback" not in result.output


def test_the_template_index_is_refused_as_not_a_workflow() -> None:
    result = CliRunner().invoke(cli, ["workflow", "analyze", str(TEMPLATES / "index.json")])
    assert result.exit_code == 1 and "not a ComfyUI workflow" in result.output


def test_import_into_a_manifest_whose_base_lists_models_keeps_them(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\nmodels:\n  - repo: Comfy-Org/flux1-dev\n"
                                        "    file: flux1-dev.safetensors\n    folder: diffusion_models\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\ncomfyui:\n  plugins: []  # none yet\n")
    result = _run("workflow", "import", str(TEMPLATES / "flux_dev_full_text_to_image.json"), str(child))
    assert result.exit_code == 0, result.output
    assert "= diffusion_models/flux1-dev.safetensors" in result.output
    loaded = load_manifest(child).manifest
    # A list in the child replaces the base's whole: the base's file is repeated, not lost.
    names = [Path(m.file).name for m in loaded.models]
    assert names[0] == "flux1-dev.safetensors" and {"clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"} \
        <= set(names) and len(names) == 4
    assert "  plugins: []  # none yet\n" in child.read_text()


def test_a_workflow_with_odd_metadata_is_still_analyzed(tmp_path: Path) -> None:
    data = {"nodes": [{"id": 1, "type": "VAELoader", "widgets_values": ["ae.safetensors"],
                       "properties": {"cnr_id": "comfy-core", "ver": "not a version", "models": "x"}},
                      {"id": 2, "type": "NewCoreNode", "properties": {"cnr_id": "comfy-core", "ver": "0.20.0"}}],
            "definitions": {"subgraphs": "x"}, "extra": {"groupNodes": []}}
    result = analyze(parse_workflow(data, "odd.json"), load_catalog())
    assert [(m.folder, m.name) for m in result.models] == [("vae", "ae.safetensors")]
    assert result.comfyui_min == "0.20.0" and "NewCoreNode" in result.comfyui_min_why


def test_node_providers_of_a_real_template() -> None:
    result = analyze(load_workflow(TEMPLATES / "image_qwen_image_edit_2509.json"), load_catalog())
    providers = {use.class_type: use.provider for use in result.nodes}
    assert providers["KSampler"] == providers["TextEncodeQwenImageEditPlus"] == "comfyui"
    assert providers["MarkdownNote"] == "frontend"
    # Newer than the catalog's ComfyUI node list, and not marked comfy-core in this template.
    assert providers["SaveImageAdvanced"] == "unknown"
    # Only the subgraph's inner nodes are listed, never the instance's own (UUID) type.
    assert not [name for name in providers if len(name) == 36 and name.count("-") == 4]
    newer = analyze(load_workflow(TEMPLATES / "image_flux2.json"), load_catalog())
    [flux2] = [use for use in newer.nodes if use.class_type == "EmptyFlux2LatentImage"]
    assert flux2.provider == "comfyui" and flux2.saved_with and "newer than 0.3.64" in flux2.detail


def test_import_refuses_a_flow_style_section_and_leaves_the_file_alone(tmp_path: Path) -> None:
    manifest = tmp_path / "flow.yaml"
    manifest.write_text("name: flow\ncomfyui: {ref: auto}\n")
    result = CliRunner().invoke(cli, ["workflow", "import", str(TEMPLATES / "image_qwen_image_edit_2509.json"),
                                      str(manifest), "--nunchaku"])
    assert result.exit_code == 1 and f"{manifest}:2: 'comfyui:' is written in flow style" in result.output
    assert manifest.read_text() == "name: flow\ncomfyui: {ref: auto}\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "flow.yaml"]
