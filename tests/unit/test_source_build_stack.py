"""A source-build resolution in roles/nunchaku.yaml: a wheel_build resource in the contract's shape replaces
the download, build tools go in first, the same pip resource installs the built wheel; mirrors cover the
repository and every submodule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from provisioner.catalog import load_catalog
from provisioner.expand import base_context
from provisioner.facts import load_facts
from provisioner.lock.mirrors import Mirrors, Rewrite, mirror_spec, rewrite_resolution
from provisioner.manifest import load_manifest
from provisioner.manifest.loader import LoadedManifest
from provisioner.resolve import Resolution, render_resolution, resolve
from provisioner.role_expansion import expand_roles, ordered_roles, role_search_path
from provisioner.stack import stack_context

REPO = Path(__file__).resolve().parents[2]
FACTS = Path(__file__).resolve().parent / "facts"
#: The wheel_build fields the host-side kind takes (the shared contract), no more and no fewer.
CONTRACT_FIELDS = {"path", "project", "repo", "ref", "commit", "submodules", "python", "workdir", "env",
                   "add_supported_arches", "expect_arches", "prerequisites", "max_jobs", "build_key"}
ENV_KEYS = {"NUNCHAKU_INSTALL_MODE", "NUNCHAKU_BUILD_WHEELS", "CC", "CXX", "CUDA_HOME"}
MIRRORS = Mirrors(mirrors=[Rewrite(prefix="https://github.com/", replace="file:///srv/git/")])


def _h200() -> tuple[LoadedManifest, Resolution, dict[str, Any]]:
    loaded = load_manifest(REPO / "manifests" / "h200-source.yaml")
    facts = load_facts(FACTS / "h200-source.json")
    resolution = resolve(loaded.manifest, facts, load_catalog())
    assert resolution.ok, render_resolution(resolution)
    context = {"resolved": resolution.model_dump(mode="json"), "facts": facts.model_dump(mode="json"),
               "stack": stack_context(loaded.manifest, resolution)}
    return loaded, resolution, context


def _role_resources(loaded: LoadedManifest, context: dict[str, Any]) -> list[dict[str, Any]]:
    roles = ordered_roles(["nunchaku"], role_search_path(loaded))
    expanded = expand_roles(roles, loaded.manifest.vars, base_context(loaded, context))
    return [raw for role, _index, raw in expanded.resources if role == "nunchaku"]


def test_the_role_builds_instead_of_downloading() -> None:
    loaded, resolution, context = _h200()
    resources = _role_resources(loaded, context)
    kinds = [(r["kind"], r.get("name")) for r in resources]
    assert kinds == [("pip", "nunchaku-build-tools"), ("wheel_build", None), ("pip", "nunchaku")]
    tools, build, install = resources
    assert tools["packages"] == ["ninja", "setuptools", "wheel", "packaging"]
    assert tools["constraints"] == install["constraints"] == resolution.torch.requirements  # type: ignore[union-attr]
    assert set(build) - {"kind", "when"} == CONTRACT_FIELDS
    assert build["path"] == "cache/wheels/nunchaku-1.2.1+cu13.0torch2.11-cp312-cp312-linux_x86_64.whl"
    assert install["packages"] == ["nunchaku==1.2.1+cu13.0torch2.11"] and install["find_links"] == ["cache/wheels"]
    assert build["python"] == "venv/bin/python" and install["venv"] == "venv"
    assert set(build["env"]) <= ENV_KEYS
    assert build["env"] == {"NUNCHAKU_INSTALL_MODE": "FAST", "NUNCHAKU_BUILD_WHEELS": "1", "CC": "/usr/bin/gcc",
                            "CXX": "/usr/bin/g++", "CUDA_HOME": "/usr/local/cuda"}
    assert build["add_supported_arches"] == ["90"] and build["expect_arches"] == ["90"]
    assert build["commit"] == "af49f24911b49147c074ed96c324fb66884d1f87" and len(build["submodules"]) == 5
    assert build["prerequisites"] == {"nvcc_major": "13", "gcc_min": 11, "ninja": True, "python_headers": True,
                                      "min_free_bytes": 8000000000, "job_memory_bytes": 4294967296}
    assert build["max_jobs"] is None and len(build["build_key"]) == 64
    assert build["workdir"] == f"build/nunchaku-{build['build_key'][:12]}"


def test_a_wheel_resolution_still_downloads() -> None:
    loaded = load_manifest(REPO / "manifests" / "rtx4090.yaml")
    facts = load_facts(FACTS / "rtx4090.json")
    resolution = resolve(loaded.manifest, facts, load_catalog())
    context = {"resolved": resolution.model_dump(mode="json"), "facts": facts.model_dump(mode="json"),
               "stack": stack_context(loaded.manifest, resolution)}
    kinds = [r["kind"] for r in _role_resources(loaded, context)]
    assert kinds == ["download", "pip"]


class _BuildShaped(BaseModel):
    """Only what mirror_spec reads of a wheel_build spec: its kind, repo and submodule URLs."""

    model_config = ConfigDict(extra="allow")

    kind: str = "wheel_build"
    repo: str
    submodules: list[_Submodule]


class _Submodule(BaseModel):
    path: str
    url: str
    commit: str | None


_BuildShaped.model_rebuild()


def test_mirrors_rewrite_the_repository_and_every_submodule() -> None:
    _loaded, resolution, context = _h200()
    build = context["stack"]["nunchaku"]["build"]
    spec = _BuildShaped(repo=build["repo"], submodules=build["submodules"])
    mirrored = mirror_spec("wheel_build:x", spec, MIRRORS).spec
    assert mirrored.repo == "file:///srv/git/nunchaku-ai/nunchaku"  # type: ignore[attr-defined]
    urls = [s.url for s in mirrored.submodules]  # type: ignore[attr-defined]
    assert urls[0] == "file:///srv/git/NVIDIA/cutlass.git" and all(u.startswith("file:///srv/git/") for u in urls)
    shown = rewrite_resolution(resolution, MIRRORS).nunchaku
    assert shown is not None and shown.build is not None and shown.build.repo.startswith("file:///srv/git/")
    assert resolution.nunchaku is not None and resolution.nunchaku.build is not None
    assert resolution.nunchaku.build.repo == "https://github.com/nunchaku-ai/nunchaku"  # the input is unchanged
