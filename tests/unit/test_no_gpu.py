"""A host without a GPU is told one fix, gpu.allow_cpu, by the resolver (plan, apply, check) and fleet plan."""

from __future__ import annotations

import json
from pathlib import Path

from provisioner.catalog import load_catalog
from provisioner.facts import load_facts
from provisioner.fleet.areas import gpu_summary
from provisioner.manifest import load_manifest
from provisioner.resolve import resolve
from provisioner.resolve.no_gpu import NO_GPU_FIX, refused_without_gpu

REPO = Path(__file__).resolve().parents[2]
NOGPU = Path(__file__).parent / "facts" / "nogpu.json"


def test_resolver_and_fleet_table_say_the_same_fix() -> None:
    manifest = load_manifest(REPO / "manifests" / "base" / "comfyui-nunchaku.yaml").manifest
    resolution = resolve(manifest, load_facts(NOGPU), load_catalog())
    assert [(v.field, v.fix) for v in resolution.violations] == [("gpu", NO_GPU_FIX)]
    assert "gpu.allow_cpu: true" in NO_GPU_FIX
    facts = json.loads(NOGPU.read_text())
    cell = gpu_summary(facts, manifest.gpu.model_dump(), None, manifest.cuda.version)
    assert cell["text"] == "no GPU" and cell["problems"] == [f"no NVIDIA GPU found on the host: {NO_GPU_FIX}"]


def test_allow_cpu_or_a_declared_arch_is_not_refused() -> None:
    facts = json.loads(NOGPU.read_text())
    assert gpu_summary(facts, {"arch": "auto", "allow_cpu": True}, None)["problems"] == []
    assert gpu_summary(facts, {"arch": "sm_89"}, None)["problems"] == []  # building for another machine
    assert gpu_summary(facts, {"arch": "auto"}, None, stack=False)["problems"] == []  # no stack, no GPU needed
    assert not refused_without_gpu("auto", False, "cpu", 0)
    assert refused_without_gpu("auto", False, "auto", 0) and not refused_without_gpu("auto", False, "auto", 1)


def test_a_missing_index_names_the_gpus_there_are() -> None:
    facts = json.loads((Path(__file__).parent / "facts" / "rtx4090.json").read_text())
    assert gpu_summary(facts, {"arch": "auto", "index": 3}, None)["problems"] == ["no GPU 3: set gpu.index to one of 0"]
