"""Choose nunchaku wheel + torch + ComfyUI-nunchaku + ComfyUI together: enumerate every combination the
catalog knows, narrow by the manifest and the host, and keep the newest that passes everything."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

from packaging.version import Version

from provisioner.catalog import Build, Catalog, NunchakuRelease, PluginRelease, version_key
from provisioner.facts import TorchInstall
from provisioner.manifest.model import Manifest
from provisioner.resolve.combo import NO_VERSION, Combo, Needs, pinned, python_choices, python_label, version_spec
from provisioner.resolve.host import Host, driver_at_least
from provisioner.resolve.narrowing import Step, narrow
from provisioner.resolve.outside import parse_wheel_url, same_build, unknown_release, unknown_torch
from provisioner.resolve.plugin import pinned_comfyui, pinned_plugin, plugin_steps
from provisioner.resolve.result import Violation


def search_nunchaku(
    manifest: Manifest, catalog: Catalog, host: Host, needs: Needs, adopted: TorchInstall | None,
    source_builds: list[tuple[NunchakuRelease, Build]] | None = None, prefer: Callable[[Combo], bool] | None = None,
) -> tuple[Combo | None, list[Violation], list[str]]:
    """The newest combination of prebuilt wheels; with `source_builds`, of builds made on the host instead
    (each a release with the torch/CUDA the host would compile it against). `prefer` ranks first."""
    notes: list[str] = []
    violations: list[Violation] = []
    nunchaku_spec, bad = version_spec(manifest.nunchaku.version, "nunchaku.version")
    torch_spec, bad_torch = version_spec(manifest.torch.version, "torch.version")
    violations += [v for v in (bad, bad_torch) if v]
    checkable, plugin_pin = pinned_plugin(manifest, catalog, notes)
    plugins: list[PluginRelease | None] = list(catalog.plugin_releases()) if checkable else [None]
    comfy_versions, comfy_pin = pinned_comfyui(manifest, catalog, notes)
    if source_builds is not None:
        builds = list(source_builds)
    else:
        builds = [(release, build) for release in catalog.nunchaku_releases() for build in release.builds]
        builds += _wheel_outside_catalog(manifest, catalog, host, violations, notes)
    candidates = [
        Combo(
            release,
            build,
            catalog.torch_release(build.torch) or unknown_torch(catalog, build.torch, [build.cuda], host.python),
            build.cuda,
            plugin,
            comfy,
        )
        for release, build in builds
        for plugin, comfy in product(plugins, comfy_versions)
    ]
    arch = host.arch or ""
    info = host.arch_info
    py, platform = host.python, host.platform or ""

    blackwell_hint = (
        f"; {arch} ({info.family}) needs a nunchaku build compiled with CUDA >= {info.min_build_cuda}"
        if info is not None and info.min_build_cuda
        else ""
    )

    def arch_reason(reached: list[Combo]) -> str:
        builds = sorted({f"{c.release.version} cu{c.cuda}" for c in reached if c.release}, key=str)[:3]
        text = f"no remaining nunchaku build has kernels for {arch}"
        if info and info.min_build_cuda:
            text += f" ({info.family} needs a build compiled with CUDA >= {info.min_build_cuda}"
            text += f"{', i.e. torch 2.7 or newer' if info.min_build_cuda == '12.8' else ''}"
            text += f"{', nunchaku >= ' + info.nunchaku_since if info.nunchaku_since else ''})"
        return text + (f"; builds left: {', '.join(builds)}" if builds else "")

    def driver_reason(reached: list[Combo]) -> str:
        cudas = sorted({c.cuda for c in reached if c.cuda}, key=version_key)
        return (
            f"the NVIDIA driver {host.driver} is too old for the CUDA builds left "
            f"({', '.join(cudas)}; CUDA {cudas[0]} needs driver >= {catalog.driver_floor(cudas[0])})"
        )

    def driver_remedy(reached: list[Combo]) -> str:
        floors = sorted(
            {catalog.driver_floor(c.cuda) or "" for c in reached if c.cuda},
            key=lambda f: tuple(int(p) for p in f.split(".") if p.isdigit()),
        )
        return f"upgrade the NVIDIA driver to >= {floors[0]}" if floors else "upgrade the NVIDIA driver"

    def driver_ok(c: Combo) -> bool:
        floor = catalog.driver_floor(c.cuda) if c.cuda else None
        return host.driver is None or floor is None or driver_at_least(host.driver, floor)

    steps: list[Step[Combo]] = [
        *pinned(
            nunchaku_spec is not None,
            Step(
                "nunchaku version",
                lambda c: (
                    c.release is not None
                    and nunchaku_spec is not None
                    and version_key(c.release.version) in nunchaku_spec
                ),
                lambda r: f"no nunchaku release in the catalog matches {manifest.nunchaku.version}"
                + (", so the URL of its wheel is unknown" if manifest.nunchaku.version[:1].isdigit() else ""),
                field="nunchaku.version",
                settable=True,
                label=lambda c: c.release.version if c.release else "",
                remedy=lambda r: (
                    None
                    if manifest.nunchaku.wheel_url
                    else f"set nunchaku.wheel_url (and nunchaku.wheel_sha256) to a nunchaku "
                    f"{manifest.nunchaku.version} wheel for {py} {platform}"
                ),
            ),
        ),
        Step(
            "platform",
            lambda c: c.release is not None and c.build is not None and platform in c.release.build_platforms(c.build),
            lambda r: f"no nunchaku wheel is built for {platform}",
        ),
        Step(
            "python",
            lambda c: (
                c.release is not None
                and c.build is not None
                and py in c.release.python
                and not c.release.python_excluded(py, c.build)
                and (c.torch is None or py in c.torch.python)
            ),
            lambda r: (
                f"{_versions(r)} {'has' if len(_release_set(r)) == 1 else 'have'} no wheel for "
                f"Python {python_label(py)} ({py})"
            ),
            field="python.version",
            remedy=lambda r: (
                "set python.version to " + python_choices({p for c in r if c.release for p in c.release.python})
            ),
        ),
        Step(
            "arch",
            lambda c: (
                c.release is not None
                and c.build is not None
                # A wheel from outside the catalog has no arch list: it is taken on trust (and noted).
                and (not c.release.archs or arch in catalog.build_archs(c.release, c.build))
            ),
            arch_reason,
        ),
        *pinned(
            torch_spec is not None,
            Step(
                "torch version",
                lambda c: c.torch is not None and torch_spec is not None and version_key(c.torch.torch) in torch_spec,
                lambda r: (
                    f"{_versions(r)} {'has' if len(_release_set(r)) == 1 else 'have'} no wheel for torch "
                    f"{manifest.torch.version} ({py}, {platform}, {arch})" + blackwell_hint
                ),
                field="torch.version",
                settable=True,
                label=lambda c: c.build.torch if c.build else "",
                remedy=lambda r: (
                    None
                    if manifest.nunchaku.wheel_url
                    else f"set nunchaku.wheel_url to a nunchaku wheel built for torch {manifest.torch.version} "
                    f"({py}, {platform})"
                ),
            ),
        ),
        *pinned(
            manifest.cuda.version not in ("auto", "cpu"),
            Step(
                "cuda version",
                lambda c: c.cuda == manifest.cuda.version,
                lambda r: f"no remaining nunchaku wheel is built with CUDA {manifest.cuda.version}" + blackwell_hint,
                field="cuda.version",
                settable=True,
                label=lambda c: c.cuda or "",
            ),
        ),
        *pinned(
            not manifest.nunchaku.allow_nightly_torch_builds,
            Step(
                "nightly",
                lambda c: c.build is not None and not c.build.nightly,
                lambda r: (
                    "the only wheels left ("
                    + ", ".join(
                        sorted(
                            {f"nunchaku {c.release.version} +torch{c.build.torch}" for c in r if c.release and c.build}
                        )[:3]
                    )
                    + ") are compiled against a PyTorch nightly and may not load on the stable torch release"
                ),
                field="nunchaku.allow_nightly_torch_builds",
                settable=True,
                label=lambda c: "true",
            ),
        ),
        Step(
            "torch wheel",
            lambda c: c.torch is not None and c.cuda in c.torch.cuda,
            lambda r: "the catalog has no torch release with a matching CUDA build for the wheels left",
        ),
        *pinned(host.driver is not None, Step("driver", driver_ok, driver_reason, remedy=driver_remedy)),
        *plugin_steps(manifest, catalog, needs, py, plugin_pin, comfy_pin),
    ]
    survivors, found = narrow(candidates, steps)
    violations += found
    if not survivors:
        return None, violations, notes
    return max(survivors, key=lambda c: _preference(catalog, c, adopted, prefer)), violations, notes


def _wheel_outside_catalog(
    manifest: Manifest, catalog: Catalog, host: Host, violations: list[Violation], notes: list[str]
) -> list[tuple[NunchakuRelease, Build]]:
    """A nunchaku wheel the manifest names by URL whose release the catalog does not know (a nightly)."""
    url = manifest.nunchaku.wheel_url
    wanted = manifest.nunchaku.version
    if url is None or (wanted != "auto" and not wanted[:1].isdigit()):
        return []
    wheel = parse_wheel_url(url)
    if wheel is None:
        if wanted != "auto" and catalog.nunchaku_release(wanted) is None:
            violations.append(
                Violation(
                    field="nunchaku.wheel_url",
                    reason=f"nunchaku {wanted} is not in the catalog and the file name of {url} does not say which "
                    "torch, CUDA, Python and platform it is built for",
                    fix="Point nunchaku.wheel_url at the wheel under its published name "
                    "(nunchaku-<version>+cu<cuda>torch<torch>-<python>-<python>-<platform>.whl)",
                )
            )
        return []
    if catalog.nunchaku_release(wheel.version) is not None:
        return []  # a known release: the catalog describes it, the URL only moves the download
    if wanted != "auto" and Version(wanted) != Version(wheel.version):
        violations.append(
            Violation(
                field="nunchaku.wheel_url",
                reason=f"nunchaku.version is {wanted} but {wheel.filename} is nunchaku {wheel.version}",
                fix=f"Set nunchaku.version to {wheel.version}, or point nunchaku.wheel_url at a {wanted} wheel",
            )
        )
        return []
    problems = []
    if host.platform and wheel.platform != host.platform:
        problems.append(f"it is built for {wheel.platform}, and this host is {host.platform}")
    if wheel.python != host.python:
        problems.append(f"it is built for {wheel.python}, and python.version is {host.python}")
    cuda = wheel.cuda or (manifest.cuda.version if manifest.cuda.version not in ("auto", "cpu") else None)
    if cuda is None:
        problems.append("its name does not say which CUDA it is built with")
    if problems:
        violations.append(
            Violation(
                field="nunchaku.wheel_url",
                reason=f"{wheel.filename} cannot work here: " + "; ".join(problems),
                fix="Point nunchaku.wheel_url at the wheel of that release for "
                f"{host.python}-{host.platform}" + ("" if cuda else ", or set cuda.version to its CUDA"),
            )
        )
        return []
    assert cuda is not None
    notes.append(
        f"nunchaku {wheel.version} is not in the catalog: {wheel.filename} is taken as its name says "
        f"(torch {wheel.torch}, CUDA {cuda}); which GPU architectures it has kernels for is not checked"
    )
    return [unknown_release(wheel, cuda, wheel.platform)]


def _release_set(reached: list[Combo]) -> set[str]:
    return {c.release.version for c in reached if c.release}


def _versions(reached: list[Combo]) -> str:
    versions = sorted(_release_set(reached), key=version_key, reverse=True)
    if len(versions) == 1:
        return f"nunchaku {versions[0]}"
    return f"nunchaku {', '.join(versions[:5])}{', ...' if len(versions) > 5 else ''}"


def _preference(catalog: Catalog, c: Combo, adopted: TorchInstall | None,
                prefer: Callable[[Combo], bool] | None = None) -> tuple[object, ...]:
    """An adopted venv's torch kept; what `prefer` likes (a CUDA the host's nvcc can build for); newest nunchaku,
    stable before nightly-built, newest torch and CUDA,
    newest plugin, a confirmed ComfyUI release before one known only from issues, newest ComfyUI."""
    keeps_torch = adopted is not None and c.torch is not None and same_build(adopted, c.torch.minor, c.cuda)
    return (
        keeps_torch,
        prefer(c) if prefer is not None else True,
        version_key(c.release.version) if c.release else NO_VERSION,
        not (c.build.nightly if c.build else False),
        version_key(c.torch.torch) if c.torch else NO_VERSION,
        version_key(c.cuda) if c.cuda else NO_VERSION,
        version_key(c.plugin.version) if c.plugin else NO_VERSION,
        catalog.comfyui_confirmed(c.comfyui),
        version_key(c.comfyui) if c.comfyui else NO_VERSION,
    )
