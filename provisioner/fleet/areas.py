"""Group a host's resources into the areas an operator scans a fleet by (torch, ComfyUI, models, ...)."""

from __future__ import annotations

import re
from typing import Any

from provisioner.expand import HostResource
from provisioner.resolve.no_gpu import NO_GPU_FIX, NO_GPU_REASON, refused_without_gpu

# Column order of the fleet table. "gpu" is filled from host facts, not from resources.
AREAS = ("gpu", "torch", "nunchaku", "comfyui", "plugins", "models", "env", "service", "other")
AREA_TITLES = {"gpu": "GPU/driver", "torch": "torch", "nunchaku": "nunchaku", "comfyui": "ComfyUI",
               "plugins": "plugins", "models": "models", "env": "env", "service": "service", "other": "other"}

_TORCH = re.compile(r"^(torch|torchvision|torchaudio)\b", re.IGNORECASE)


# Built-in roles by name; other roles are matched by the area their name mentions (in this order).
_ROLE_AREAS = {"comfyui-service": "service", "comfyui": "comfyui", "nunchaku": "nunchaku", "torch": "torch",
               "models": "models"}
_ROLE_WORDS = ("service", "plugin", "nunchaku", "torch", "model", "comfyui", "env")


def _role_area(origin: str) -> str | None:
    """A role named after an area (`role nunchaku`, `role my-models`) decides for its resources."""
    if not origin.startswith("role "):
        return None
    role = origin[len("role "):].lower()
    if role in _ROLE_AREAS:
        return _ROLE_AREAS[role]
    for word in _ROLE_WORDS:
        if word in role:
            return {"plugin": "plugins", "model": "models"}.get(word, word)
    return None


def _packages(spec: dict[str, Any]) -> list[str]:
    names = []
    for package in spec.get("packages") or []:
        names.append(package if isinstance(package, str) else str(package.get("requirement", "")))
    return names


def area_of(resource: HostResource) -> str:
    spec = resource.spec
    path = str(spec.get("path") or spec.get("venv") or "").lower()
    if resource.kind == "service":
        return "service"
    if resource.kind == "envfile":
        return "env"
    if "custom_nodes" in path or "custom_nodes" in str(spec.get("file") or ""):
        return "plugins"
    by_role = _role_area(resource.origin)
    if by_role:
        return by_role
    if resource.kind == "pip":
        packages = _packages(spec)
        if any("nunchaku" in p.lower() for p in packages):
            return "nunchaku"
        if any(_TORCH.match(p) for p in packages):
            return "torch"
    if resource.kind == "download" or path.split("/", 1)[0] == "models":
        return "models"
    if "comfyui" in path:
        return "comfyui"
    return "other"


def areas_of(resources: list[HostResource]) -> dict[str, str]:
    """Resource id -> area."""
    return {r.id: area_of(r) for r in resources}


def gpu_summary(facts: dict[str, Any], manifest_gpu: dict[str, Any], min_driver: str | None,
                cuda_version: str = "auto", stack: bool = True) -> dict[str, Any]:
    """The GPU/driver cell: what the host has, and whether it contradicts the manifest's pins (a missing GPU
    only where the manifest installs the stack, as plan refuses it)."""
    nvidia = facts.get("nvidia") or {}
    gpus = nvidia.get("gpus") or []
    driver = nvidia.get("driver")
    index = int(manifest_gpu.get("index") or 0)
    gpu = next((g for position, g in enumerate(gpus) if (g.get("index") if g.get("index") is not None
                                                         else position) == index), None)
    problems: list[str] = []
    arch = str(manifest_gpu.get("arch") or "auto")
    if gpu is None:
        if gpus:
            problems.append(f"no GPU {index}: set gpu.index to one of "
                            f"{', '.join(str(g.get('index', i)) for i, g in enumerate(gpus))}")
        elif stack and refused_without_gpu(arch, bool(manifest_gpu.get("allow_cpu")), cuda_version, 0):
            problems.append(f"{NO_GPU_REASON}: {NO_GPU_FIX}")
        text = "no GPU"
    else:
        text = f"{gpu.get('name', '?')} · {driver or '?'}"
        if arch not in ("auto", "none") and gpu.get("arch") and gpu["arch"] != arch:
            problems.append(f"GPU is {gpu['arch']}, manifest pins {arch}")
    if min_driver and driver and _version(driver) < _version(min_driver):
        problems.append(f"driver {driver} is older than cuda.min_driver {min_driver}")
    return {"text": text, "name": gpu.get("name") if gpu else None, "arch": gpu.get("arch") if gpu else None,
            "driver": driver, "count": len(gpus), "problems": problems}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"[0-9]+", text))
