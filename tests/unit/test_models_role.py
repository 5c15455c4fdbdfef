"""roles/models.yaml: each Hub model's download carries its repo, revision, file and the venv's python,
so the host can use its Hugging Face cache and huggingface_hub; a model from elsewhere carries none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner.catalog import load_catalog
from provisioner.expand import expand
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.manifest.model import ModelSpec
from provisioner.resolve import render_resolution, resolve
from provisioner.stack import stack_context

REPO = Path(__file__).resolve().parents[2]
FACTS = Path(__file__).resolve().parent / "facts"


def _downloads(extra_models: list[ModelSpec]) -> list[dict[str, Any]]:
    loaded = load_manifest(REPO / "manifests" / "rtx4090.yaml")
    loaded.manifest = loaded.manifest.model_copy(update={"models": [*loaded.manifest.models, *extra_models]})
    facts = load_facts(FACTS / "rtx4090.json")
    resolution = resolve(loaded.manifest, facts, load_catalog())
    assert resolution.ok, render_resolution(resolution)
    context = {"resolved": resolution.model_dump(mode="json"), "facts": facts.model_dump(mode="json"),
               "stack": stack_context(loaded.manifest, resolution)}
    expansion = expand(loaded, environ={}, extra_context=context)
    return [r.spec for r in expansion.resources if r.kind == "download" and "/models/" in r.spec["path"]]


def test_hub_models_carry_their_hub_coordinates_and_the_venv_python() -> None:
    elsewhere = ModelSpec(file="custom.safetensors", folder="loras", url="https://example.org/custom.safetensors")
    downloads = _downloads([elsewhere])
    hub_files = [d for d in downloads if d["url"].startswith("https://huggingface.co/")]
    assert hub_files, "the manifest lists Hub models"
    for spec in hub_files:
        hub = spec["hub"]
        assert spec["url"] == f"https://huggingface.co/{hub['repo']}/resolve/{hub['revision']}/{hub['file']}"
        assert hub["python"] == "venv/bin/python"
    [custom] = [d for d in downloads if d["url"] == elsewhere.url]
    assert custom["hub"] is None
