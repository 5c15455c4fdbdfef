"""Choose torch (and ComfyUI) without nunchaku: plain ComfyUI loaders on GPUs nunchaku cannot serve,
installs with nunchaku disabled, and CPU-only installs."""

from __future__ import annotations

from provisioner.catalog import Catalog, version_key
from provisioner.manifest.model import Manifest
from provisioner.resolve.combo import (
    NO_VERSION,
    Combo,
    Needs,
    in_range,
    pinned,
    python_choices,
    python_label,
    version_spec,
)
from provisioner.resolve.host import Host, driver_at_least
from provisioner.resolve.narrowing import Step, narrow
from provisioner.resolve.plugin import pinned_comfyui, ref_steps
from provisioner.resolve.result import Violation


def search_plain(
    manifest: Manifest, catalog: Catalog, host: Host, needs: Needs, cpu: bool
) -> tuple[Combo | None, list[Violation], list[str]]:
    """Torch (and ComfyUI) without nunchaku: the newest torch whose CUDA build the driver and GPU allow."""
    notes: list[str] = []
    torch_spec, bad = version_spec(manifest.torch.version, "torch.version")
    violations = [bad] if bad else []
    comfy_versions, comfy_pin = pinned_comfyui(manifest, catalog, notes)
    _, comfy_ref = ref_steps(catalog, "comfyui.plugins", None, comfy_pin)
    candidates = [
        Combo(None, None, torch, cuda, None, comfy)
        for torch in catalog.torch_releases()
        for cuda in ([None] if cpu else torch.cuda)
        for comfy in comfy_versions
    ]
    info = host.arch_info
    py = host.python

    def driver_ok(c: Combo) -> bool:
        floor = catalog.driver_floor(c.cuda) if c.cuda else None
        return host.driver is None or floor is None or driver_at_least(host.driver, floor)

    steps: list[Step[Combo]] = [
        Step(
            "python",
            lambda c: c.torch is not None and py in c.torch.python,
            lambda r: f"no torch release in the catalog has wheels for Python {python_label(py)}",
            field="python.version",
            remedy=lambda r: (
                "set python.version to " + python_choices({p for c in r if c.torch for p in c.torch.python})
            ),
        ),
        *pinned(
            torch_spec is not None,
            Step(
                "torch version",
                lambda c: c.torch is not None and torch_spec is not None and version_key(c.torch.torch) in torch_spec,
                lambda r: f"no torch release in the catalog matches {manifest.torch.version}",
                field="torch.version",
                settable=True,
                label=lambda c: c.torch.minor if c.torch else "",
            ),
        ),
        *pinned(
            not cpu and manifest.cuda.version != "auto",
            Step(
                "cuda version",
                lambda c: c.cuda == manifest.cuda.version,
                lambda r: f"no torch release left has a CUDA {manifest.cuda.version} build",
                field="cuda.version",
                settable=True,
                label=lambda c: c.cuda or "",
            ),
        ),
        *pinned(
            not cpu and info is not None and info.min_cuda is not None,
            Step(
                "arch cuda",
                lambda c: (
                    c.cuda is not None
                    and info is not None
                    and info.min_cuda is not None
                    and version_key(c.cuda) >= version_key(info.min_cuda)
                ),
                lambda r: (
                    f"{host.arch} ({info.family if info else ''}) needs a torch CUDA build >= "
                    f"{info.min_cuda if info else ''}"
                ),
            ),
        ),
        *pinned(
            not cpu and host.driver is not None,
            Step(
                "driver",
                driver_ok,
                lambda r: f"the NVIDIA driver {host.driver} is too old for every torch CUDA build left",
                remedy=lambda r: (
                    "upgrade the NVIDIA driver to >= "
                    + min(
                        (catalog.driver_floor(c.cuda) or "" for c in r if c.cuda),
                        key=lambda f: tuple(int(p) for p in f.split(".") if p.isdigit()),
                        default="the newest",
                    )
                ),
            ),
        ),
        comfy_ref,
        Step(
            "model comfyui",
            lambda c: all(in_range(spec, c.comfyui) for _, spec in needs.comfyui),
            lambda r: "; ".join(f"{why} needs ComfyUI {spec}" for why, spec in needs.comfyui),
            field="comfyui.ref",
        ),
    ]
    survivors, found = narrow(candidates, steps)
    violations += found
    if not survivors:
        return None, violations, notes
    best = max(
        survivors,
        key=lambda c: (
            c.torch is not None and not c.torch.uncertain,
            version_key(c.torch.torch) if c.torch else NO_VERSION,
            version_key(c.cuda) if c.cuda else NO_VERSION,
            catalog.comfyui_confirmed(c.comfyui),
            version_key(c.comfyui) if c.comfyui else NO_VERSION,
        ),
    )
    return best, violations, notes
