"""Lock overlay, disagreements, mirrors and the lock file format: pure functions over real resolutions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from huggingface_hub.hf_api import ModelInfo

from provisioner.catalog import load_catalog
from provisioner.engine import expand_stack
from provisioner.facts import load_facts
from provisioner.lock.errors import LockFileError, MirrorsError
from provisioner.lock.hub import revision_from_info
from provisioner.lock.mirrors import Mirrors, find_mirrors_file, load_mirrors, mirror_spec, rewrite_resolution
from provisioner.lock.model import (
    Lock,
    LockedFacts,
    LockedGit,
    LockedManifest,
    LockedModel,
    LockedPlugin,
    LockedTorch,
    LockedWheel,
    dump_lock,
    manifest_digest,
    read_lock,
    write_lock,
)
from provisioner.lock.overlay import apply_lock, facts_difference, lock_disagreements
from provisioner.manifest import load_manifest
from provisioner.manifest.model import Manifest
from provisioner.resolve import Resolution, resolve
from provisioner.resources.specs import DownloadSpec, GitSpec, PipSpec, RequirementsSpec

FACTS = Path(__file__).parent / "facts"
PLUGIN = {"name": "ComfyUI-nunchaku", "repo": "https://github.com/nunchaku-ai/ComfyUI-nunchaku"}
# One file, without the text encoders and VAE of its workflow set: these tests are about pinning one model.
FLUX = {"repo": "nunchaku-tech/nunchaku-flux.1-dev", "file": "svdq-{precision}_r32-flux.1-dev.safetensors",
        "companions": False}
T5 = {"repo": "nunchaku-tech/nunchaku-t5", "file": "awq-int4-flux.1-t5xxl.safetensors", "folder": "text_encoders"}
COMFY_COMMIT, PLUGIN_COMMIT, HUB_COMMIT = "c" * 40, "a" * 40, "d" * 40
WHEEL_SHA, MODEL_SHA = "1" * 64, "2" * 64


def manifest(**sections: Any) -> Manifest:
    data: dict[str, Any] = {"name": "test", "comfyui": {"ref": "master", "plugins": [PLUGIN]}, "models": [FLUX]}
    data.update(sections)
    return Manifest.model_validate(data)


def resolved(host: str = "rtx4090", **sections: Any) -> Resolution:
    result = resolve(manifest(**sections), load_facts(FACTS / f"{host}.json"), load_catalog())
    assert result.ok, result.violations
    return result


def lock_of(res: Resolution, source: Manifest | None = None) -> Lock:
    """A lock as `provision lock` would write it for `res`, with made-up commits and hashes."""
    assert res.torch and res.nunchaku and res.comfyui and res.plugin and res.gpu
    return Lock(
        manifest=LockedManifest(name="test", digest=manifest_digest(source or manifest())),
        facts=LockedFacts(gpu_arch=res.gpu.arch, python=res.python, platform=res.platform, driver_cuda="13.0"),
        mode=res.mode,
        torch=LockedTorch(version=res.torch.version, cuda=res.torch.cuda, index_url=res.torch.index_url,
                          requirements=res.torch.requirements),
        nunchaku=LockedWheel(version=res.nunchaku.version, filename=res.nunchaku.filename, url=res.nunchaku.urls[0],
                             sha256=WHEEL_SHA, size=1234),
        comfyui=LockedGit(repo=res.comfyui.repo, ref=res.comfyui.ref, commit=COMFY_COMMIT),
        plugins=[LockedPlugin(name=res.plugin.name, repo=res.plugin.repo, ref=res.plugin.ref, commit=PLUGIN_COMMIT)],
        models=[
            LockedModel(repo=m.repo, file=m.file, filename=m.filename, folder=m.folder, revision=m.revision,
                        commit=HUB_COMMIT, url=(m.url or "").replace("/resolve/main/", f"/resolve/{HUB_COMMIT}/"),
                        sha256=MODEL_SHA, size=42)
            for m in res.models
        ],
    )


# --- apply_lock -----------------------------------------------------------------------------------


def test_apply_lock_pins_commits_urls_hashes_and_revisions() -> None:
    fresh = resolved()
    lock = lock_of(fresh)
    pinned = apply_lock(fresh, lock)
    assert lock_disagreements(fresh, lock) == []
    assert pinned.comfyui and pinned.comfyui.ref == COMFY_COMMIT and "locked to commit" in pinned.comfyui.why
    assert pinned.plugin and pinned.plugin.ref == PLUGIN_COMMIT
    assert pinned.nunchaku and lock.nunchaku and pinned.nunchaku.urls[0] == lock.nunchaku.url
    assert pinned.nunchaku.sha256 == WHEEL_SHA
    [model] = pinned.models
    assert (model.revision, model.sha256, model.size, model.size_approx) == (HUB_COMMIT, MODEL_SHA, 42, False)
    assert model.url == f"https://huggingface.co/{FLUX['repo']}/resolve/{HUB_COMMIT}/svdq-int4_r32-flux.1-dev.safetensors"
    assert pinned.torch == fresh.torch


def test_apply_lock_is_pure_and_idempotent() -> None:
    fresh = resolved()
    before = fresh.model_dump()
    lock = lock_of(fresh)
    once = apply_lock(fresh, lock)
    assert fresh.model_dump() == before, "the input resolution is not modified"
    assert apply_lock(once, lock) == once
    assert lock_disagreements(once, lock) == [], "a locked resolution agrees with its lock"


def test_a_newer_nunchaku_is_reported_and_not_overlaid() -> None:
    old = manifest(nunchaku={"version": "1.0.1"})
    lock = lock_of(resolve(old, load_facts(FACTS / "rtx4090.json"), load_catalog()), old)
    fresh = resolved()
    problems = lock_disagreements(fresh, lock)
    assert "manifest now resolves nunchaku 1.2.1 but the lock pins 1.0.1; run `provision lock --update`" in problems
    assert any(p.startswith("manifest now resolves torch 2.10.0 (CUDA 13.0) but the lock pins 2.8.0") for p in problems)
    pinned = apply_lock(fresh, lock)
    assert pinned.nunchaku == fresh.nunchaku, "a wheel the lock does not pin keeps the fresh choice"
    assert pinned.comfyui and pinned.comfyui.ref == COMFY_COMMIT, "parts that agree are still pinned"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"comfyui": {"ref": "v0.7.0", "plugins": [PLUGIN]}},
         "manifest now resolves ComfyUI v0.7.0 but the lock pins master (cccccccccccc)"),
        ({"comfyui": {"ref": "master", "repo": "https://example.org/ComfyUI", "plugins": [PLUGIN]}},
         "manifest now clones ComfyUI from https://example.org/ComfyUI but the lock pins "
         "https://github.com/comfyanonymous/ComfyUI"),
        ({"models": [FLUX, T5]},
         "manifest now resolves model nunchaku-tech/nunchaku-t5/awq-int4-flux.1-t5xxl.safetensors (text_encoders), "
         "which the lock does not pin"),
        ({"models": []},
         "the lock pins model nunchaku-tech/nunchaku-flux.1-dev/svdq-int4_r32-flux.1-dev.safetensors "
         "(diffusion_models), which the manifest no longer resolves"),
        ({"models": [{**FLUX, "revision": "v2"}]},
         "manifest now asks for nunchaku-tech/nunchaku-flux.1-dev/svdq-int4_r32-flux.1-dev.safetensors at "
         "revision v2 but the lock pins main"),
        ({"torch": {"index_url": "https://mirror.example/whl/cu130"}},
         "manifest now installs torch from https://mirror.example/whl/cu130 but the lock pins "
         "https://download.pytorch.org/whl/cu130"),
        ({"nunchaku": {"wheel_sha256": "f" * 64}},
         f"nunchaku.wheel_sha256 is {'f' * 64} but the lock pins {WHEEL_SHA}"),
    ],
)
def test_each_kind_of_disagreement_names_both_sides_and_the_fix(change: dict[str, Any], expected: str) -> None:
    lock = lock_of(resolved())
    problems = lock_disagreements(resolved(**change), lock)
    assert f"{expected}; run `provision lock --update`" in problems, problems


def test_a_lock_from_another_kind_of_host_still_applies_where_it_fits() -> None:
    lock = lock_of(resolved("rtx4090"))
    other = resolved("rtx5090")
    assert facts_difference(other, lock) == "the lock was made for a sm_89 cp312 linux_x86_64 host; this one is " \
        "sm_120 cp312 linux_x86_64"
    assert facts_difference(resolved("rtx4090"), lock) is None


# --- mirrors --------------------------------------------------------------------------------------


def test_rewrite_resolution_uses_the_longest_prefix_and_the_hub_endpoint() -> None:
    mirrors = Mirrors.model_validate({
        "mirrors": [
            {"prefix": "https://github.com/", "replace": "file:///srv/git/"},
            {"prefix": "https://github.com/nunchaku-ai/nunchaku/releases/download/",
             "replace": "http://127.0.0.1:8000/wheels/"},
        ],
        "huggingface": {"endpoint": "http://127.0.0.1:9000/"},
    })
    fresh = resolved()
    before = fresh.model_dump()
    out = rewrite_resolution(fresh, mirrors)
    assert fresh.model_dump() == before
    assert out.comfyui and out.comfyui.repo == "file:///srv/git/comfyanonymous/ComfyUI"
    assert out.plugin and out.plugin.repo == "file:///srv/git/nunchaku-ai/ComfyUI-nunchaku"
    assert out.nunchaku and out.nunchaku.urls[0] == (
        "http://127.0.0.1:8000/wheels/v1.2.1/nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl")
    assert out.models[0].url == ("http://127.0.0.1:9000/nunchaku-tech/nunchaku-flux.1-dev/resolve/main/"
                                 "svdq-int4_r32-flux.1-dev.safetensors")
    assert out.torch == fresh.torch, "no rule matches the torch index"
    assert rewrite_resolution(fresh, Mirrors()) == fresh


def test_mirror_spec_rewrites_every_url_of_a_resource_once() -> None:
    # A replacement that matches its own prefix again must not be applied twice.
    mirrors = Mirrors.model_validate({"mirrors": [
        {"prefix": "https://github.com/", "replace": "https://github.com/acme-mirror/"},
        {"prefix": "https://pypi.org/simple/", "replace": "http://127.0.0.1:8000/simple/"},
        {"prefix": "https://download.pytorch.org/whl/", "replace": "http://127.0.0.1:8000/torch/"},
    ]})
    git = GitSpec(path="ComfyUI", repo="https://github.com/comfyanonymous/ComfyUI")
    assert mirror_spec("git:ComfyUI", git, mirrors).spec == git.model_copy(
        update={"repo": "https://github.com/acme-mirror/comfyanonymous/ComfyUI"})
    pip = PipSpec(venv="venv", packages=["tqdm==4.67.1", {"requirement": "nunchaku==1.2.1",
                                                          "url": "https://github.com/n/n/releases/download/n.whl"}],
                  extra_index_urls=["https://download.pytorch.org/whl/cu130"], find_links=["cache/wheels"])
    out = mirror_spec("pip:venv", pip, mirrors).spec
    assert isinstance(out, PipSpec)
    assert out.index_url == "http://127.0.0.1:8000/simple/", "a rule for PyPI's index (with its slash) is the index"
    assert out.extra_index_urls == ["http://127.0.0.1:8000/torch/cu130"]
    assert out.find_links == ["cache/wheels"], "a folder under the root is not a URL"
    assert out.packages[0] == "tqdm==4.67.1"
    assert not isinstance(out.packages[1], str) and out.packages[1].url == (
        "https://github.com/acme-mirror/n/n/releases/download/n.whl")
    assert pip.index_url is None and pip.extra_index_urls == ["https://download.pytorch.org/whl/cu130"]
    named = RequirementsSpec(venv="venv", file="ComfyUI/requirements.txt", index_url="https://example.org/simple")
    assert mirror_spec("requirements:x", named, mirrors).spec == named, "an index no rule covers stays"


@pytest.mark.parametrize(
    ("rules", "url", "keeps_token"),
    [
        ({"huggingface": {"endpoint": "http://127.0.0.1:9000"}},
         "http://127.0.0.1:9000/org/m/resolve/main/m.safetensors", True),
        ({"mirrors": [{"prefix": "https://huggingface.co/", "replace": "http://hub.internal/"}]},
         "http://hub.internal/org/m/resolve/main/m.safetensors", True),
        ({"mirrors": [{"prefix": "https://huggingface.co/org/", "replace": "http://files.internal/org/"}],
          "huggingface": {"endpoint": "http://127.0.0.1:9000"}},
         "http://files.internal/org/m/resolve/main/m.safetensors", False),
        ({"mirrors": [{"prefix": "https://huggingface.co/org/", "replace": "https://huggingface.co/fork/"}]},
         "https://huggingface.co/fork/m/resolve/main/m.safetensors", True),
    ],
    ids=["hub-endpoint", "rule-for-the-hub-root", "rule-to-another-host", "same-host"],
)
def test_a_token_follows_its_url_only_to_the_hub_or_its_mirror(rules: dict[str, Any], url: str,
                                                               keeps_token: bool) -> None:
    mirrors = Mirrors.model_validate(rules)
    spec = DownloadSpec(path="m.safetensors", url="https://huggingface.co/org/m/resolve/main/m.safetensors",
                        auth={"from_env": "HF_TOKEN"})
    out = mirror_spec("download:m.safetensors", spec, mirrors)
    assert isinstance(out.spec, DownloadSpec) and out.spec.url == url
    assert (out.spec.auth is not None) == keeps_token
    assert (out.note is None) == keeps_token
    if not keeps_token:
        assert out.note and "$HF_TOKEN" in out.note and "huggingface.endpoint" in out.note


def test_every_plugin_is_cloned_through_the_mirrors_not_only_the_chosen_one(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    base = Path(__file__).resolve().parents[2] / "manifests" / "rtx4090.yaml"
    path.write_text(f"extends: {base}\ncomfyui:\n  plugins:\n"
                    "    - {name: ComfyUI-nunchaku, repo: 'https://github.com/nunchaku-tech/ComfyUI-nunchaku'}\n"
                    "    - {name: ComfyUI-KJNodes, repo: 'https://github.com/kijai/ComfyUI-KJNodes', ref: main}\n")
    loaded = load_manifest(path)
    facts = load_facts(FACTS / "rtx4090.json")
    mirrors = Mirrors.model_validate({"mirrors": [{"prefix": "https://github.com/", "replace": "file:///srv/git/"}]})
    stack = expand_stack(loaded, facts, resolve(loaded.manifest, facts, load_catalog()), mirrors)
    clones = {r.spec["path"]: r.spec["repo"] for r in stack.expansion.resources if r.kind == "git"}
    # The shipped base names Comfy-Org; the plugin's old org resolves under its newest confirmed name.
    assert clones == {"ComfyUI": "file:///srv/git/Comfy-Org/ComfyUI",
                      "ComfyUI/custom_nodes/ComfyUI-nunchaku": "file:///srv/git/nunchaku-ai/ComfyUI-nunchaku",
                      "ComfyUI/custom_nodes/ComfyUI-KJNodes": "file:///srv/git/kijai/ComfyUI-KJNodes"}
    assert stack.resolution.plugin and stack.resolution.plugin.repo.startswith("file:///srv/git/"), \
        "the resolver's report names the mirror too"


def test_a_token_for_another_host_never_follows_a_mirror() -> None:
    mirrors = Mirrors.model_validate({"mirrors": [{"prefix": "https://github.com/", "replace": "http://git.internal/"}],
                                      "huggingface": {"endpoint": "http://git.internal"}})
    spec = DownloadSpec(path="w.whl", url="https://github.com/org/private/releases/download/v1/w.whl",
                        auth={"from_env": "GH_TOKEN"})
    out = mirror_spec("download:w.whl", spec, mirrors)
    assert isinstance(out.spec, DownloadSpec) and out.spec.auth is None, "the Hub's mirror host is not GitHub's"
    assert out.note == ("download:w.whl: the mirror git.internal replaces github.com, which $GH_TOKEN is meant for, "
                        "so the token is not sent there; a token goes only to the host its URL names")


def test_the_hub_endpoint_and_pypi_index_follow_the_rules() -> None:
    assert Mirrors().hub_endpoint == "https://huggingface.co" and Mirrors().default_index is None
    by_rule = Mirrors.model_validate({"mirrors": [
        {"prefix": "https://huggingface.co/", "replace": "http://127.0.0.1:9000/"},
        {"prefix": "https://pypi.org/", "replace": "http://127.0.0.1:8000/pypi/"},
    ]})
    assert by_rule.hub_endpoint == "http://127.0.0.1:9000", "lock's Hub API calls go to the Hub's mirror"
    assert by_rule.default_index == "http://127.0.0.1:8000/pypi/simple"


def test_mirror_file_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "provision.mirrors.yaml"
    path.write_text("mirrors:\n  - prefx: https://github.com/\n    replace: file:///srv/git/\n"
                    "huggingface:\n  endpoint: ftp://hub\n")
    with pytest.raises(MirrorsError) as caught:
        load_mirrors(path)
    text = str(caught.value)
    assert f"{path}:2:5: mirrors[0].prefx: unknown key 'prefx'; did you mean 'prefix'?" in text
    assert f"{path}:5:3: huggingface.endpoint: 'ftp://hub' must be an http:// or https:// URL" in text


def test_the_mirrors_file_is_found_by_flag_then_env_then_beside_the_manifest(tmp_path: Path) -> None:
    manifest_path = tmp_path / "m.yaml"
    assert find_mirrors_file(manifest_path, environ={}) is None
    (tmp_path / "provision.mirrors.yaml").write_text("mirrors: []\n")
    assert find_mirrors_file(manifest_path, environ={}) == tmp_path / "provision.mirrors.yaml"
    assert find_mirrors_file(manifest_path, environ={"PROVISION_MIRRORS": "/etc/m.yaml"}) == Path("/etc/m.yaml")
    assert find_mirrors_file(manifest_path, Path("x.yaml"), environ={"PROVISION_MIRRORS": "/e"}) == Path("x.yaml")


# --- the lock file --------------------------------------------------------------------------------


def test_the_lock_file_round_trips_and_is_stable(tmp_path: Path) -> None:
    lock = lock_of(resolved())
    path = tmp_path / "m.yaml.lock"
    write_lock(lock, path)
    text = path.read_text()
    assert text.startswith("# Written by `provision lock`")
    assert read_lock(path) == lock
    assert dump_lock(read_lock(path)) == text
    keys = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(("#", " ", "-"))]
    assert keys == ["version", "manifest", "facts", "mode", "torch", "nunchaku", "comfyui", "plugins", "models"]


def test_an_invalid_lock_names_file_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml.lock"
    write_lock(lock_of(resolved()), path)
    path.write_text(path.read_text().replace(f"commit: {COMFY_COMMIT}", "commit: main"))
    with pytest.raises(LockFileError) as caught:
        read_lock(path)
    assert f"{path}:" in str(caught.value) and "comfyui.commit" in str(caught.value)
    assert "provision lock --update" in str(caught.value)


def test_manifest_digest_ignores_formatting_but_not_meaning() -> None:
    assert manifest_digest(manifest()) == manifest_digest(Manifest.model_validate(manifest().model_dump()))
    assert manifest_digest(manifest()) != manifest_digest(manifest(env={"A": "1"}))


# --- the Hub's answer -----------------------------------------------------------------------------


def test_model_info_gives_lfs_hashes_and_sizes() -> None:
    answer = {
        "id": "org/repo", "sha": HUB_COMMIT,
        "siblings": [
            {"rfilename": "model.safetensors", "size": 10, "blobId": "b" * 40,
             "lfs": {"sha256": MODEL_SHA, "size": 10, "pointerSize": 134}},
            {"rfilename": "config.json", "size": 3, "blobId": "e" * 40},
            {"rfilename": "README.md"},
        ],
    }
    revision = revision_from_info("org/repo", "main", ModelInfo(**answer))
    assert revision.sha == HUB_COMMIT
    assert revision.files["model.safetensors"].sha256 == MODEL_SHA
    assert (revision.files["config.json"].sha256, revision.files["config.json"].size) == (None, 3)
    assert revision.files["README.md"].size is None
