"""Model files outside the target root, in an explicit extra root (a model library, an NFS share): accepted
for model files and folders only, refused anywhere else, and never through a link that leads out."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.catalog import load_catalog
from provisioner.engine import expand_stack
from provisioner.errors import ProvisionError
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.resolve import resolve
from tests.support.fake_hub import HubState, serve_hub
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, converge, plan

MODEL = os.urandom(256 * 1024 + 3)
FACTS = Path(__file__).parents[1] / "unit" / "facts" / "rtx4090.json"


@pytest.fixture
def hub() -> Iterator[tuple[HubState, str]]:
    state = HubState()
    with serve_hub(state) as endpoint:
        yield state, endpoint


def _download(state: HubState, endpoint: str, path: str) -> dict[str, object]:
    sha = state.add("org/lora", "style.safetensors", MODEL)
    return {"kind": "download", "path": path, "url": f"{endpoint}/org/lora/resolve/main/style.safetensors",
            "sha256": sha}


@pytest.mark.parametrize("host", ["local", "ssh"], indirect=True)
def test_model_files_and_folders_land_in_an_extra_root(host: TargetHost, tmp_path: Path,
                                                       hub: tuple[HubState, str]) -> None:
    library = tmp_path / "library"
    library.mkdir()
    state, endpoint = hub
    manifest = write_manifest(tmp_path, host, {
        "resources": [
            {"kind": "directory", "path": f"{library}/loras", "mode": "0755"},
            _download(state, endpoint, f"{library}/loras/style.safetensors"),
            {"kind": "directory", "path": "models"},
        ]})
    _with_extra_roots(manifest, [str(library)])
    converge(manifest)
    assert hashlib.sha256((library / "loras" / "style.safetensors").read_bytes()).hexdigest() == \
        hashlib.sha256(MODEL).hexdigest()
    assert host.exists("models") and not host.exists("loras")


def test_a_path_outside_the_root_and_every_extra_root_is_refused(tmp_path: Path, hub: tuple[HubState, str]) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    library, elsewhere = tmp_path / "library", tmp_path / "elsewhere"
    library.mkdir()
    state, endpoint = hub
    manifest = write_manifest(tmp_path, host, {"resources": [_download(state, endpoint, f"{elsewhere}/x.safetensors")]})
    _with_extra_roots(manifest, [str(library)])
    with pytest.raises(ProvisionError) as refused:
        plan(manifest)
    message = str(refused.value)
    assert f"{elsewhere}/x.safetensors is outside the target root and outside every target.extra_roots entry " \
           f"({library})" in message
    assert "manifest.yaml" in message and "resources[0].path" in message
    assert not elsewhere.exists()

    # Only model files and folders may live in an extra root: a file resource there is refused as it always was.
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "file", "path": f"{library}/notes.txt", "content": "x\n"}]})
    _with_extra_roots(manifest, [str(library)])
    with pytest.raises(ProvisionError) as refused:
        load_manifest(manifest)
    assert "must be relative to the target root" in str(refused.value)
    assert not (library / "notes.txt").exists()


@pytest.mark.parametrize("host", ["local", "ssh"], indirect=True)
def test_a_link_out_of_the_extra_root_is_refused(host: TargetHost, tmp_path: Path,
                                                 hub: tuple[HubState, str]) -> None:
    library, outside = tmp_path / "library", tmp_path / "outside"
    library.mkdir()
    outside.mkdir()
    (library / "loras").symlink_to(outside)
    state, endpoint = hub
    manifest = write_manifest(tmp_path, host, {"resources": [
        _download(state, endpoint, f"{library}/loras/style.safetensors")]})
    _with_extra_roots(manifest, [str(library)])
    report = plan(manifest)
    assert report.exit_code() == 1
    error = report.errors[0]["error"]
    assert f"resolves to {outside}, outside the extra root {library}" in error
    result = apply(manifest)
    assert not result.ok and list(outside.iterdir()) == []


def test_an_extra_root_that_is_not_there_is_never_created(tmp_path: Path, hub: tuple[HubState, str]) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    missing = tmp_path / "nfs"
    state, endpoint = hub
    manifest = write_manifest(tmp_path, host, {"resources": [_download(state, endpoint, f"{missing}/x.safetensors")]})
    _with_extra_roots(manifest, [str(missing)])
    result = apply(manifest)
    assert not result.ok and "does not exist on the host (not mounted?)" in str(result.resources[0]["error"])
    assert not missing.exists()


def test_a_models_root_in_an_extra_root_is_wired_into_comfyui(tmp_path: Path) -> None:
    (tmp_path / "stack.yaml").write_text(
        "name: ada\ntarget: {root: /opt/comfy, extra_roots: [/mnt/models]}\ngpu: {arch: sm_89}\n"
        "nunchaku: {enabled: false}\nservice: {enabled: false}\nroles: [layout, comfyui]\n"
        "comfyui: {models_root: /mnt/models}\n"
        "models: [{url: 'https://example.invalid/m.safetensors', file: m.safetensors, folder: loras,"
        " size: 90000000000000}]\n")  # 90 TB: more than the root's disk, which the models do not use
    loaded = load_manifest(tmp_path / "stack.yaml")
    facts = load_facts(FACTS)
    resolution = resolve(loaded.manifest, facts, load_catalog())
    assert resolution.ok, resolution.violations
    assert any("models go to /mnt/models, outside the target root" in note for note in resolution.notes)
    resources = {r.id: r for r in expand_stack(loaded, facts, resolution).expansion.resources}
    wiring = resources["file:ComfyUI/extra_model_paths.yaml"].spec["content"]
    assert "base_path: /mnt/models\n" in wiring and "  loras: loras\n" in wiring
    assert "directory:/mnt/models/loras" in resources
    assert "directory:/mnt/models" not in resources, "an extra root itself is used as it is, never managed"

    (tmp_path / "stack.yaml").write_text((tmp_path / "stack.yaml").read_text().replace(
        "comfyui: {models_root: /mnt/models}", "comfyui: {models_root: /srv/models}"))
    with pytest.raises(ProvisionError) as refused:
        load_manifest(tmp_path / "stack.yaml")
    assert "comfyui.models_root /srv/models is outside the target root and outside every target.extra_roots " \
           "entry (/mnt/models)" in str(refused.value)


def _with_extra_roots(manifest: Path, roots: list[str]) -> None:
    import yaml

    document = yaml.safe_load(manifest.read_text())
    document["target"]["extra_roots"] = roots
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
