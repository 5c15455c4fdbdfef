"""`provision lock` against local stand-ins for every upstream: bare git repos with tags and branches,
a wheelhouse over HTTP, and an HTTP server with the Hub's layout and API, reached through a mirrors file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from provisioner import preflight
from provisioner.catalog import load_catalog
from provisioner.commands.lock import lock_command
from provisioner.engine import HostSession, expand_stack
from provisioner.facts import load_facts
from provisioner.lock import (
    StaleLockError,
    dump_lock,
    find_mirrors_file,
    load_mirrors,
    lock_path_for,
    read_lock,
    use_lock,
)
from provisioner.manifest import load_manifest
from provisioner.resolve import Resolution, resolve
from tests.support.fake_hub import HubState, serve_hub
from tests.support.gitrepos import UpstreamRepo, make_upstream
from tests.support.servers import serve_directory
from tests.support.wheels import build_wheel

FACTS = Path(__file__).parents[1] / "unit" / "facts" / "rtx4090.json"
RELEASES = "https://github.com/nunchaku-ai/nunchaku/releases/download/"
WHEEL = "nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl"
OLD_WHEEL = "nunchaku-1.0.1+torch2.8-cp312-cp312-linux_x86_64.whl"
FLUX_REPO, FLUX_FILE = "nunchaku-tech/nunchaku-flux.1-dev", "svdq-int4_r32-flux.1-dev.safetensors"
EXTRAS_REPO = "example-org/extras"
PLUGIN = {"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku"}


@dataclass
class Upstreams:
    """Everything `provision lock` asks questions of, all on this machine."""

    comfyui: UpstreamRepo
    plugin: UpstreamRepo
    wheels: Path
    hub: HubState
    directory: Path
    cache: Path

    def manifest(self, **sections: Any) -> Path:
        data: dict[str, Any] = {
            "name": "gpu",
            "target": {"connection": "local", "root": str(self.directory / "root")},
            "comfyui": {"ref": "master", "plugins": [PLUGIN]},
            # The FLUX.1 set's encoders and VAE live in repos this stand-in Hub does not serve.
            "models": [{"repo": FLUX_REPO, "file": "svdq-{precision}_r32-flux.1-dev.safetensors", "companions": False},
                       {"repo": EXTRAS_REPO, "file": "config.json", "folder": "vae"}],
        }
        data.update(sections)
        path = self.directory / "gpu.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def lock(self, *args: str) -> Result:
        manifest = self.directory / "gpu.yaml"
        return CliRunner().invoke(lock_command, [str(manifest), "--facts", str(FACTS),
                                                 "--cache-dir", str(self.cache), *args])

    def fresh_resolution(self) -> Resolution:
        return resolve(load_manifest(self.directory / "gpu.yaml").manifest, load_facts(FACTS), load_catalog())


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[Upstreams]:
    git = tmp_path / "git"
    comfyui = make_upstream(git / "comfyanonymous", "ComfyUI")
    comfyui.commit({"main.py": "print('comfy')\n"}, "v0.7.0", tag="v0.7.0", branch="master")
    plugin = make_upstream(git / "nunchaku-ai", "ComfyUI-nunchaku")
    plugin.commit({"__init__.py": "NODE_CLASS_MAPPINGS = {}\n"}, "v1.2.1", tag="v1.2.1")
    wheels = tmp_path / "releases"
    build_wheel(wheels / "v1.2.1", "nunchaku", "1.2.1+cu13.0torch2.10", tag="cp312-cp312-linux_x86_64")
    build_wheel(wheels / "v1.0.1", "nunchaku", "1.0.1+torch2.8", tag="cp312-cp312-linux_x86_64")
    hub = HubState()
    hub.add(FLUX_REPO, FLUX_FILE, os.urandom(4096))
    hub.add(EXTRAS_REPO, "config.json", b'{"scale": 1}\n')
    directory = tmp_path / "manifests"
    directory.mkdir()
    with serve_directory(wheels) as wheel_url, serve_hub(hub) as endpoint:
        mirrors = {
            "mirrors": [{"prefix": "https://github.com/", "replace": f"{git.as_uri()}/"},
                        {"prefix": RELEASES, "replace": f"{wheel_url}/"}],
            "huggingface": {"endpoint": endpoint},
        }
        (directory / "provision.mirrors.yaml").write_text(yaml.safe_dump(mirrors, sort_keys=False))
        yield Upstreams(comfyui, plugin, wheels, hub, directory, tmp_path / "cache")


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def test_lock_pins_commits_wheel_and_hub_files_offline(upstreams: Upstreams) -> None:
    manifest = upstreams.manifest()
    result = _ok(upstreams.lock())
    lock = read_lock(lock_path_for(manifest))
    assert lock_path_for(manifest).name == "gpu.yaml.lock"
    assert f"{lock_path_for(manifest)}: written" in result.output

    assert lock.comfyui is not None
    assert (lock.comfyui.repo, lock.comfyui.ref) == ("https://github.com/comfyanonymous/ComfyUI", "master")
    assert lock.comfyui.commit == upstreams.comfyui.tags["v0.7.0"], "the head of master"
    [plugin] = lock.plugins
    assert (plugin.ref, plugin.commit) == ("v1.2.1", upstreams.plugin.tags["v1.2.1"]), "the tag's peeled commit"

    wheel = (upstreams.wheels / "v1.2.1" / WHEEL).read_bytes()
    assert lock.nunchaku is not None
    assert lock.nunchaku.url == f"{RELEASES}v1.2.1/{WHEEL}", "the lock names the upstream, not the mirror"
    assert (lock.nunchaku.sha256, lock.nunchaku.size) == (hashlib.sha256(wheel).hexdigest(), len(wheel))

    assert lock.torch is not None and lock.torch.index_url == "https://download.pytorch.org/whl/cu130"
    assert lock.torch.requirements == ["torch==2.10.0+cu130", "torchvision==0.25.0+cu130", "torchaudio==2.10.0+cu130"]
    assert (lock.facts.gpu_arch, lock.facts.python, lock.facts.driver_cuda) == ("sm_89", "cp312", "13.0")

    flux, extras = lock.models
    commit = upstreams.hub.snapshot(FLUX_REPO)
    content = upstreams.hub.files[f"{FLUX_REPO}/main/{FLUX_FILE}"]
    assert (flux.revision, flux.commit) == ("main", commit)
    assert (flux.sha256, flux.size) == (hashlib.sha256(content).hexdigest(), len(content))
    assert flux.url == f"https://huggingface.co/{FLUX_REPO}/resolve/{commit}/{FLUX_FILE}"
    assert extras.sha256 == hashlib.sha256(b'{"scale": 1}\n').hexdigest(), "a file kept in git is hashed"
    assert not any(path.startswith("/api/") and "blobs=true" not in path for path, _ in upstreams.hub.requests)


def test_the_lock_round_trips_and_relocking_is_byte_identical(upstreams: Upstreams) -> None:
    manifest = upstreams.manifest()
    _ok(upstreams.lock())
    path = lock_path_for(manifest)
    first = path.read_bytes()
    assert first.startswith(b"# Written by `provision lock`")
    assert dump_lock(read_lock(path)).encode() == first
    assert "unchanged" in _ok(upstreams.lock("--update")).output
    assert path.read_bytes() == first
    assert b"\nmanifest:\n  name: gpu\n  digest: sha256:" in first


def test_the_lock_keeps_a_resolution_reproducible_after_upstreams_move(upstreams: Upstreams) -> None:
    manifest = upstreams.manifest()
    _ok(upstreams.lock())
    locked = read_lock(lock_path_for(manifest))
    assert locked.comfyui is not None
    moved = upstreams.comfyui.commit({"main.py": "print('newer')\n"}, "moved master", branch="master")
    upstreams.plugin.commit({"__init__.py": "# 1.3\n"}, "v1.3.0", tag="v1.3.0")
    upstreams.hub.add(FLUX_REPO, FLUX_FILE, os.urandom(4096))

    loaded = load_manifest(manifest)
    upstream, _ = use_lock(loaded, upstreams.fresh_resolution())
    assert upstream.comfyui and upstream.comfyui.repo == "https://github.com/comfyanonymous/ComfyUI"
    stack = expand_stack(loaded, load_facts(FACTS), upstreams.fresh_resolution(),
                         load_mirrors(find_mirrors_file(manifest)))
    pinned, notes = stack.resolution, stack.lock_notes
    assert notes.disagreements == []
    assert pinned.comfyui is not None and pinned.comfyui.ref == locked.comfyui.commit
    assert pinned.comfyui.repo == upstreams.comfyui.url.removesuffix(".git"), "cloned through the mirror"
    assert pinned.plugin and pinned.plugin.ref == upstreams.plugin.tags["v1.2.1"]
    assert pinned.nunchaku and locked.nunchaku and pinned.nunchaku.sha256 == locked.nunchaku.sha256
    assert pinned.nunchaku.urls[0].endswith(f"/v1.2.1/{WHEEL}") and pinned.nunchaku.urls[0].startswith("http://127.")
    flux = pinned.models[0]
    assert (flux.revision, flux.sha256) == (locked.models[0].commit, locked.models[0].sha256)
    assert flux.url and flux.url.startswith("http://127.0.0.1:") and f"/resolve/{flux.revision}/" in flux.url

    _ok(upstreams.lock())
    assert read_lock(lock_path_for(manifest)) == locked, "plain `lock` keeps pins that still fit"
    _ok(upstreams.lock("--update"))
    updated = read_lock(lock_path_for(manifest))
    assert updated.comfyui is not None and updated.comfyui.commit == moved, "--update follows the branch"
    assert updated.models[0].commit != locked.models[0].commit
    assert updated.plugins == locked.plugins, "the catalog still picks v1.2.1, whose commit did not move"


def test_a_stale_lock_is_reported_by_plan_and_refused_by_apply(upstreams: Upstreams,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    upstreams.manifest(nunchaku={"version": "1.0.1"})
    _ok(upstreams.lock())
    manifest = upstreams.manifest()
    check = upstreams.lock("--check")
    assert check.exit_code == 2
    expected = "manifest now resolves nunchaku 1.2.1 but the lock pins 1.0.1; run `provision lock --update`"
    assert expected in check.output

    # No GPU here: the session reads the recorded facts of an RTX 4090 host instead of this machine's.
    monkeypatch.setattr(preflight, "gather_facts", lambda client, manifest: load_facts(FACTS))
    session = HostSession(load_manifest(manifest))
    report = session.plan()
    assert report.exit_code() == 0
    assert f"gpu.yaml.lock: {expected}" in session.lock_notes.lines
    with pytest.raises(StaleLockError, match="nunchaku 1.2.1 but the lock pins 1.0.1"):
        HostSession(load_manifest(manifest)).apply()
    generations = upstreams.directory / "root" / ".provision" / "generations"
    assert not generations.exists() or not any(generations.iterdir()), "nothing was applied"

    assert "re-pinned: manifest now resolves nunchaku 1.2.1 but the lock pins 1.0.1" in _ok(upstreams.lock()).output
    assert _ok(upstreams.lock("--check")).exit_code == 0
    session = HostSession(load_manifest(manifest))
    session.plan()
    assert session.lock_notes.disagreements == []
    assert session.resolution and session.resolution.nunchaku and session.resolution.nunchaku.version == "1.2.1"


def test_no_download_leaves_the_wheel_unpinned_and_the_cache_spares_a_second_download(upstreams: Upstreams) -> None:
    manifest = upstreams.manifest()
    result = _ok(upstreams.lock("--no-download"))
    assert "its sha256 is not pinned" in result.stderr
    assert read_lock(lock_path_for(manifest)).nunchaku.sha256 is None  # type: ignore[union-attr]

    _ok(upstreams.lock())
    pinned = read_lock(lock_path_for(manifest)).nunchaku
    assert pinned is not None and pinned.sha256 is not None
    (upstreams.wheels / "v1.2.1" / WHEEL).unlink()
    _ok(upstreams.lock("--update"))
    assert read_lock(lock_path_for(manifest)).nunchaku == pinned, "the second lock hashed the cached download"


def test_an_unknown_ref_names_the_field_and_the_fix(upstreams: Upstreams) -> None:
    upstreams.manifest(comfyui={"ref": "does-not-exist", "plugins": [PLUGIN]})
    result = upstreams.lock()
    assert result.exit_code == 1
    assert "comfyui.ref: 'does-not-exist' is neither a tag nor a branch of file://" in result.output
    assert not lock_path_for(upstreams.directory / "gpu.yaml").exists()


def test_a_missing_hub_file_names_the_model(upstreams: Upstreams) -> None:
    upstreams.manifest(models=[{"repo": EXTRAS_REPO, "file": "missing.safetensors", "folder": "vae"}])
    result = upstreams.lock()
    assert result.exit_code == 1
    assert "models[0]: example-org/extras has no file 'missing.safetensors' at revision 'main'" in result.output


def test_without_nunchaku_the_installed_plugin_is_still_locked(upstreams: Upstreams) -> None:
    """Plain and CPU installs clone the listed ComfyUI-nunchaku too, so the lock pins its commit."""
    manifest = upstreams.manifest(nunchaku={"enabled": False},
                                  models=[{"repo": EXTRAS_REPO, "file": "config.json", "folder": "vae"}])
    _ok(upstreams.lock())
    lock = read_lock(lock_path_for(manifest))
    assert lock.mode == "plain" and lock.nunchaku is None
    assert [(p.name, p.ref, p.commit) for p in lock.plugins] == [
        ("ComfyUI-nunchaku", "v1.2.1", upstreams.plugin.tags["v1.2.1"])]


def test_lock_refuses_a_workflow_set_file_whose_hub_sha256_differs_from_the_catalog(upstreams: Upstreams) -> None:
    # The FLUX.1 set's files, served with other bytes than the real ones the catalog's sha256 names.
    for repo, path in (("comfyanonymous/flux_text_encoders", "clip_l.safetensors"),
                       ("comfyanonymous/flux_text_encoders", "t5xxl_fp16.safetensors"),
                       ("Comfy-Org/Lumina_Image_2.0_Repackaged", "split_files/vae/ae.safetensors")):
        upstreams.hub.add(repo, path, os.urandom(2048))
    upstreams.manifest(models=[{"repo": FLUX_REPO, "file": "svdq-{precision}_r32-flux.1-dev.safetensors"}])
    result = upstreams.lock()
    assert result.exit_code == 1, result.output
    clip_l = upstreams.hub.files["comfyanonymous/flux_text_encoders/main/clip_l.safetensors"]
    served = hashlib.sha256(clip_l).hexdigest()
    assert "the catalog's sha256 for comfyanonymous/flux_text_encoders/clip_l.safetensors (of the flux.1-dev " \
           "workflow set) is 660c6f5b1abae9dc498ac2d21e1347d2abdb0cf6c0c0c8576cd796491d9a6cdd" in result.output
    assert f"the Hub serves sha256 {served}" in result.output
    assert "companions: false" in result.output
    assert not lock_path_for(upstreams.directory / "gpu.yaml").exists()


def test_lock_names_the_workflow_set_when_the_hub_lacks_one_of_its_files(upstreams: Upstreams) -> None:
    upstreams.hub.add("comfyanonymous/flux_text_encoders", "README.md", b"# text encoders\n")
    upstreams.manifest(models=[{"repo": FLUX_REPO, "file": "svdq-{precision}_r32-flux.1-dev.safetensors"}])
    result = upstreams.lock()
    assert result.exit_code == 1, result.output
    assert "the flux.1-dev workflow set: comfyanonymous/flux_text_encoders has no file 'clip_l.safetensors'" \
        in result.output
    assert "companions: false" in result.output
