"""The ComfyUI instances a manifest runs: one on gpu.index, or one per entry of service.instances.

Each instance sees only its own GPU: the service runs with CUDA_VISIBLE_DEVICES set to the GPU's
nvidia-smi index, and with CUDA_DEVICE_ORDER=PCI_BUS_ID, because CUDA's default order (fastest first)
can number the GPUs of a mixed host differently from nvidia-smi, whose numbers the facts, the resolver
and the manifest use. Inside the process that GPU is cuda:0, so the checks, which run with the same
environment, test torch device 0, and the plugin's device_id is 0.

The environment is set rather than ComfyUI's own --cuda-device, which sets CUDA_VISIBLE_DEVICES only
after custom nodes' prestartup scripts ran, leaves CUDA_DEVICE_ORDER alone, and does not reach the
check programs.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.manifest.model import Manifest

SINGLE_SERVICE = "comfyui"
# The device index inside a process that sees one GPU.
VISIBLE_INDEX = 0


@dataclass(frozen=True)
class ComfyInstance:
    name: str
    port: int
    gpu: int | None  # the nvidia-smi index; None in CPU mode

    def env(self) -> dict[str, str]:
        if self.gpu is None:
            return {}
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(self.gpu)}

    @property
    def torch_index(self) -> int:
        """The index torch uses for this instance's GPU, inside the narrowed process."""
        return VISIBLE_INDEX

    @property
    def log(self) -> str:
        return f"logs/{self.name}.log"


def comfy_instances(manifest: Manifest, cpu: bool = False) -> list[ComfyInstance]:
    """The instances in manifest order; in CPU mode there is no GPU to narrow to."""
    service = manifest.service
    if not service.instances:
        return [ComfyInstance(SINGLE_SERVICE, service.port, None if cpu else manifest.gpu.index)]
    return [ComfyInstance(i.name or f"comfyui-gpu{i.gpu}", i.port, None if cpu else i.gpu)
            for i in service.instances]


def instance_gpus(manifest: Manifest) -> list[int]:
    """Every GPU a ComfyUI of this manifest serves from (the resolver checks each exists and fits)."""
    if not manifest.service.instances:
        return [manifest.gpu.index]
    return list(dict.fromkeys(i.gpu for i in manifest.service.instances))
