"""Choose torch (and ComfyUI) without nunchaku: plain ComfyUI loaders on GPUs nunchaku cannot serve,
installs with nunchaku disabled, and CPU-only installs."""

from __future__ import annotations

from itertools import product

from provisioner.catalog import Catalog, PluginRelease, TorchRelease, version_key
from provisioner.facts import TorchInstall
from provisioner.manifest.model import Manifest
from provisioner.resolve.combo import (
    NO_VERSION,
    Combo,
    Needs,
    pinned,
    python_choices,
    python_label,
    version_spec,
)
from provisioner.resolve.host import Host, driver_at_least
from provisioner.resolve.narrowing import Step, narrow
from provisioner.resolve.outside import (
    assumed_cuda_builds,
    exact_torch,
    installed_torch,
    same_build,
    unknown_torch,
)
from provisioner.resolve.plugin import pinned_comfyui, pinned_plugin, plugin_steps
from provisioner.resolve.result import Violation


def search_plain(
    manifest: Manifest, catalog: Catalog, host: Host, needs: Needs, cpu: bool, adopted: TorchInstall | None
) -> tuple[Combo | None, list[Violation], list[str]]:
    """Torch, the listed ComfyUI-nunchaku and ComfyUI without nunchaku: the newest torch whose CUDA build the
    driver and GPU allow (an adopted venv's own torch first)."""
    notes: list[str] = []
    torch_spec, bad = version_spec(manifest.torch.version, "torch.version")
    violations = [bad] if bad else []
    checkable, plugin_pin = pinned_plugin(manifest, catalog, notes)
    plugins: list[PluginRelease | None] = list(catalog.plugin_releases()) if checkable else [None]
    comfy_versions, comfy_pin = pinned_comfyui(manifest, catalog, notes)
    candidates = [
        Combo(None, None, torch, cuda, plugin, comfy)
        for torch in _torch_releases(manifest, catalog, host, adopted, notes)
        for cuda in ([None] if cpu else torch.cuda)
        for plugin, comfy in product(plugins, comfy_versions)
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
        *plugin_steps(manifest, catalog, needs, py, plugin_pin, comfy_pin),
    ]
    survivors, found = narrow(candidates, steps)
    violations += found
    if not survivors:
        return None, violations, notes
    best = max(
        survivors,
        key=lambda c: (
            adopted is not None and c.torch is not None and same_build(adopted, c.torch.minor, c.cuda),
            c.torch is not None and not c.torch.uncertain,
            version_key(c.torch.torch) if c.torch else NO_VERSION,
            version_key(c.cuda) if c.cuda else NO_VERSION,
            version_key(c.plugin.version) if c.plugin else NO_VERSION,
            catalog.comfyui_confirmed(c.comfyui),
            version_key(c.comfyui) if c.comfyui else NO_VERSION,
        ),
    )
    return best, violations, notes


def _torch_releases(
    manifest: Manifest, catalog: Catalog, host: Host, adopted: TorchInstall | None, notes: list[str]
) -> list[TorchRelease]:
    """The catalog's torch releases, plus a pinned or adopted torch it does not know (accepted, noted)."""
    releases = catalog.torch_releases()
    pinned = exact_torch(manifest.torch.version)
    spec, _ = version_spec(manifest.torch.version, "torch.version")
    if pinned is not None and spec is not None and not any(version_key(r.torch) in spec for r in releases):
        cuda = [] if manifest.cuda.version == "cpu" else assumed_cuda_builds(catalog, manifest.cuda.version)
        notes.append(
            f"torch {pinned} is not in the catalog: it is installed as torch.version asks; its CUDA builds are "
            f"assumed to be {', '.join(cuda) or 'none'} and torchvision/torchaudio are left for pip to match"
        )
        releases = [unknown_torch(catalog, pinned, cuda, host.python), *releases]
    installed = installed_torch(catalog, adopted, host.python) if adopted is not None else None
    if installed is not None and installed.uncertain and all(r.torch != installed.torch for r in releases):
        notes.append(f"torch {adopted.version if adopted else ''} in the adopted venv is not in the catalog; "
                     "it is kept as it is")
        releases = [installed, *releases]
    return releases
