"""A source-build resolution in roles/nunchaku.yaml: a wheel_build resource in the contract's shape replaces
the download, build tools go in first, the same pip resource installs the built wheel; mirrors cover the
repository and every submodule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner.catalog import load_catalog
from provisioner.expand import base_context, expand
from provisioner.facts import load_facts
from provisioner.lock.mirrors import Mirrors, Rewrite, rewrite_resolution
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


def test_the_expanded_resource_is_a_valid_wheel_build() -> None:
    loaded, _resolution, context = _h200()
    kinds = [r.kind for r in expand(loaded, environ={}, extra_context=context).resources]
    assert "wheel_build" in kinds and "download" not in kinds
    assert kinds.index("wheel_build") < max(i for i, k in enumerate(kinds) if k == "pip")


def test_a_wheel_resolution_still_downloads() -> None:
    loaded = load_manifest(REPO / "manifests" / "rtx4090.yaml")
    facts = load_facts(FACTS / "rtx4090.json")
    resolution = resolve(loaded.manifest, facts, load_catalog())
    context = {"resolved": resolution.model_dump(mode="json"), "facts": facts.model_dump(mode="json"),
               "stack": stack_context(loaded.manifest, resolution)}
    kinds = [r["kind"] for r in _role_resources(loaded, context)]
    assert kinds == ["download", "pip"]


def test_mirrors_rewrite_the_repository_and_every_submodule() -> None:
    loaded, resolution, context = _h200()
    [build] = [r for r in expand(loaded, environ={}, extra_context=context, mirrors=MIRRORS).resources
               if r.kind == "wheel_build"]
    assert build.spec["repo"] == "file:///srv/git/nunchaku-ai/nunchaku"
    urls = [s["url"] for s in build.spec["submodules"]]
    assert urls[0] == "file:///srv/git/NVIDIA/cutlass.git" and all(u.startswith("file:///srv/git/") for u in urls)
    shown = rewrite_resolution(resolution, MIRRORS).nunchaku
    assert shown is not None and shown.build is not None and shown.build.repo.startswith("file:///srv/git/")
    assert resolution.nunchaku is not None and resolution.nunchaku.build is not None
    assert resolution.nunchaku.build.repo == "https://github.com/nunchaku-ai/nunchaku"  # the input is unchanged
