"""gpu.index and service.instances: which device each ComfyUI and its checks use."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.catalog import load_catalog
from provisioner.checks.request import plan_instance_checks
from provisioner.errors import ProvisionError
from provisioner.facts import Facts
from provisioner.manifest import load_manifest
from provisioner.resolve import resolve
from provisioner.stack import stack_context

REPO = Path(__file__).resolve().parents[2]
FACTS = Path(__file__).parent / "facts"


def two_gpu_facts(second: str = "rtx4090") -> Facts:
    """An RTX 4090 host with a second GPU (by default the same model)."""
    data = json.loads((FACTS / "rtx4090.json").read_text())
    other = copy.deepcopy(json.loads((FACTS / f"{second}.json").read_text())["nvidia"]["gpus"][0])
    other["index"] = 1
    data["nvidia"]["gpus"].append(other)
    return Facts.model_validate(data)


def manifest_at(tmp_path: Path, **fields: Any) -> Path:
    data = {"extends": str(REPO / "manifests" / "rtx4090.yaml"), **fields}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_service_and_the_checks_see_the_second_gpu_as_device_0(tmp_path: Path) -> None:
    loaded = load_manifest(manifest_at(tmp_path, gpu={"index": 1}))
    resolution = resolve(loaded.manifest, two_gpu_facts(), load_catalog())
    assert resolution.violations == []
    [instance] = stack_context(loaded.manifest, resolution)["instances"]
    assert instance["name"] == "comfyui" and instance["log"] == "logs/comfyui.log"
    assert instance["env"] == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}
    [plan] = plan_instance_checks(loaded.manifest, REPO / "manifests", resolution=resolution)
    assert plan.instance is None  # one ComfyUI: the report keeps its plain check ids
    assert plan.request["gpu"] == {"index": 0, "physical": 1, "env": instance["env"], "expected_arch": "sm_89"}
    # The loader's device_id counts the devices ComfyUI sees: its GPU alone, as 0.
    assert resolution.plugin is not None
    device_id = next(s for s in resolution.plugin.settings if s.name == "device_id")
    assert device_id.value == 0 and "GPU 1" in device_id.why


def test_two_instances_resolve_on_two_gpus_of_one_arch(tmp_path: Path) -> None:
    loaded = load_manifest(manifest_at(tmp_path, service={"instances": [{"gpu": 0, "port": 8188},
                                                                       {"gpu": 1, "port": 8189}]}))
    resolution = resolve(loaded.manifest, two_gpu_facts(), load_catalog())
    assert resolution.violations == []
    context = stack_context(loaded.manifest, resolution)
    assert [(i["name"], i["port"], i["env"]["CUDA_VISIBLE_DEVICES"]) for i in context["instances"]] == [
        ("comfyui-gpu0", 8188, "0"), ("comfyui-gpu1", 8189, "1")]
    assert [i["argv"][i["argv"].index("--port") + 1] for i in context["instances"]] == ["8188", "8189"]
    plans = plan_instance_checks(loaded.manifest, REPO / "manifests", resolution=resolution)
    assert [(p.instance, p.request["gpu"]["physical"], p.request["smoke"]["port"]) for p in plans] == [
        ("comfyui-gpu0", 0, 8188), ("comfyui-gpu1", 1, 8189)]


def test_an_instance_on_a_missing_or_other_arch_gpu_is_a_violation(tmp_path: Path) -> None:
    loaded = load_manifest(manifest_at(tmp_path, service={"instances": [{"gpu": 0, "port": 8188},
                                                                       {"gpu": 1, "port": 8189},
                                                                       {"gpu": 5, "port": 8190}]}))
    resolution = resolve(loaded.manifest, two_gpu_facts("rtx3090"), load_catalog())
    found = {(v.field, v.fix) for v in resolution.violations}
    assert ("service.instances[2].gpu", "Set service.instances[2].gpu to one of: 0, 1") in found
    assert any(f == "service.instances[1].gpu" and "one manifest per GPU arch" in fix for f, fix in found)


@pytest.mark.parametrize(("service", "words"), [
    ({"instances": [{"gpu": 0, "port": 8188}, {"gpu": 1, "port": 8188}]}, "share the port 8188"),
    ({"instances": [{"gpu": 0, "port": 8188}, {"gpu": 0, "port": 8189}]}, "share the name comfyui-gpu0"),
    ({"extra_args": ["--cuda-device", "1"]}, "--cuda-device is set for you"),
    ({"extra_args": ["--cuda-device=1"]}, "--cuda-device is set for you"),
])
def test_conflicting_instances_and_cuda_device_are_refused(tmp_path: Path, service: dict[str, Any],
                                                           words: str) -> None:
    with pytest.raises(ProvisionError, match=words):
        load_manifest(manifest_at(tmp_path, service=service))


def test_the_systemd_unit_carries_the_services_gpu(tmp_path: Path) -> None:
    from provisioner.expand import expand

    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump({"name": "unit", "target": {"root": "/opt/comfy"}, "resources": [
        {"kind": "service", "name": "comfyui-gpu1", "argv": ["venv/bin/python", "main.py", "--port", "8189"],
         "env": {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}}]}))
    unit = expand(load_manifest(path), environ={}).resources[0].spec["unit"]
    assert "Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID\nEnvironment=CUDA_VISIBLE_DEVICES=1\n" in unit
    # A value systemd would read as more than a literal is refused at load.
    path.write_text(path.read_text().replace("PCI_BUS_ID", "'a b'"))
    with pytest.raises(ProvisionError, match="CUDA_DEVICE_ORDER"):
        load_manifest(path)
