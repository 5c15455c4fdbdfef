"""roles/nunchaku.yaml in every mode: the resolved wheel where there is one, else PyPI's unrelated
`nunchaku` removed (CPU, FP8 fallback, plain)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.catalog import load_catalog
from provisioner.expand import expand
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.manifest.loader import LoadedManifest
from provisioner.resolve import render_resolution, resolve
from provisioner.stack import stack_context

REPO = Path(__file__).resolve().parents[2]
FACTS = Path(__file__).resolve().parent / "facts"


def _nunchaku_resources(loaded: LoadedManifest, facts_name: str) -> tuple[str, list[dict[str, Any]]]:
    facts = load_facts(FACTS / f"{facts_name}.json")
    resolution = resolve(loaded.manifest, facts, load_catalog())
    assert resolution.ok, render_resolution(resolution)
    context = {"resolved": resolution.model_dump(mode="json"), "facts": facts.model_dump(mode="json"),
               "stack": stack_context(loaded.manifest, resolution)}
    expansion = expand(loaded, environ={}, extra_context=context)
    return resolution.mode or "", [r.spec for r in expansion.resources if r.id == "pip:venv#nunchaku"]


def test_a_resolved_wheel_is_pinned_with_its_label() -> None:
    mode, [spec] = _nunchaku_resources(load_manifest(REPO / "manifests" / "rtx4090.yaml"), "rtx4090")
    assert mode == "nunchaku"
    [requirement] = spec["packages"]
    assert requirement.startswith("nunchaku==1.") and "+cu13.0torch2.10" in requirement
    assert spec["remove_unrelated"] == []


@pytest.mark.parametrize(("facts", "gpu", "precision", "mode"), [
    ("nogpu", {"arch": "auto", "allow_cpu": True}, "auto", "cpu"),
    ("h100", {"arch": "auto"}, "auto", "plain"),  # Hopper: the FP8 fallback, no nunchaku wheel
])
def test_without_a_wheel_the_unrelated_package_is_removed(facts: str, gpu: dict[str, Any], precision: str,
                                                           mode: str) -> None:
    loaded = load_manifest(REPO / "manifests" / "rtx4090.yaml")
    manifest = loaded.manifest
    loaded.manifest = manifest.model_copy(update={
        "gpu": manifest.gpu.model_copy(update=gpu),
        "nunchaku": manifest.nunchaku.model_copy(update={"precision": precision}),
        "cuda": manifest.cuda.model_copy(update={"version": "auto"}),
        "checks": manifest.checks.model_copy(update={"nodes": []}),  # no plugin nodes without nunchaku
    })
    resolved_mode, [spec] = _nunchaku_resources(loaded, facts)
    assert resolved_mode == mode
    assert spec["packages"] == []
    assert spec["remove_unrelated"] == [
        {"name": "nunchaku", "marker_module": "nunchaku._C", "label": "PyPI's unrelated package"}]
