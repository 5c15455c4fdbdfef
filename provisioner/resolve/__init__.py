"""The resolver: a pure function of (Manifest, Facts, Catalog) that picks the GPU precision, torch build,
nunchaku wheel, ComfyUI-nunchaku and ComfyUI refs and concrete model files, or reports every violation."""

from __future__ import annotations

from posixpath import basename
from urllib.parse import urlsplit

from packaging.version import Version

from provisioner.catalog import Catalog, ModelEntry, TorchRelease, parse_version, specifier, version_key
from provisioner.facts import Facts, TorchInstall, Venv
from provisioner.manifest.model import Manifest
from provisioner.resolve.combo import Combo, Needs
from provisioner.resolve.host import Host, assess_host
from provisioner.resolve.installed import describe_venv
from provisioner.resolve.models import ModelPlan, plan_models
from provisioner.resolve.outside import same_build, venv_torch
from provisioner.resolve.plain import search_plain
from provisioner.resolve.plugin import find_plugin
from provisioner.resolve.render import render_resolution
from provisioner.resolve.result import (
    ComfyUIChoice,
    GpuChoice,
    ModelChoice,
    NunchakuChoice,
    PluginChoice,
    PluginSettingChoice,
    Resolution,
    TorchChoice,
    Violation,
)
from provisioner.resolve.settings import resolve_settings
from provisioner.resolve.source_build import fill_source_build, search_backend

__all__ = [
    "ComfyUIChoice",
    "GpuChoice",
    "ModelChoice",
    "NunchakuChoice",
    "PluginChoice",
    "PluginSettingChoice",
    "Resolution",
    "TorchChoice",
    "Violation",
    "render_resolution",
    "resolve",
]

GIB = 1024**3


def resolve(manifest: Manifest, facts: Facts, catalog: Catalog) -> Resolution:
    """Choose the newest combination that fits the manifest and the host, or list every reason none does."""
    host = assess_host(manifest, facts, catalog)
    result = Resolution(
        mode=host.mode,
        gpu=host.gpu_choice,
        platform=host.platform,
        python=host.python,
        fallback=host.fallback,
        notes=list(host.notes),
        violations=list(host.violations),
    )
    if host.mode is None:
        return result
    nunchaku = host.mode == "nunchaku"
    vram_gib = host.gpu.memory_total_mib / 1024 if host.gpu and host.gpu.memory_total_mib else None
    plan = plan_models(manifest.models, catalog, host.precision, nunchaku, vram_gib)
    result.notes += plan.notes
    result.violations += plan.violations
    needs = _needs(manifest, catalog, plan, nunchaku, result)
    if host.no_wheels:
        return _without_choices(result)
    adopted = _adopted_torch(manifest, facts)
    if nunchaku:
        combo, violations, notes = search_backend(manifest, catalog, host, needs, adopted, facts)
    else:
        combo, violations, notes = search_plain(manifest, catalog, host, needs, host.mode == "cpu", adopted)
    result.notes += notes
    result.violations += violations
    result.models = plan.models
    result.absent_models = plan.absent
    if combo is not None:
        _fill_choices(result, manifest, catalog, host, combo, facts)
    elif (found := find_plugin(manifest, catalog)) is not None:
        # No combination to show, but bad plugin settings are reported in the same run all the same.
        result.violations += resolve_settings(manifest, catalog, host, found[0], found[1], None, result)[1]
    _check_capacity(result, manifest, facts, catalog, host, plan)
    describe_venv(result, manifest, facts)
    return _without_choices(result) if result.violations else result


def _without_choices(result: Resolution) -> Resolution:
    """Only a complete, consistent combination is worth applying; keep just the host description."""
    result.torch = result.nunchaku = None
    result.plugin = result.comfyui = None
    result.models = []
    return result


def _needs(manifest: Manifest, catalog: Catalog, plan: ModelPlan, nunchaku: bool, result: Resolution) -> Needs:
    plugin_nodes = {n for release in catalog.plugin.releases for n in catalog.plugin_nodes(release)}
    wanted = [n for n in [*plan.nodes, *manifest.checks.nodes] if n in plugin_nodes]
    comfy = [(entry.id, entry.comfyui) for entry in plan.entries if entry is not None and entry.comfyui]
    if not nunchaku:
        # The plugin is still installed (the manifest lists it), but its nodes need nunchaku to register.
        checked = [node for node in dict.fromkeys(manifest.checks.nodes)
                   if node in plugin_nodes and node not in catalog.plugin.nodes_without_backend]
        if checked:
            result.notes.append(
                f"checks.nodes lists {', '.join(checked)} from ComfyUI-nunchaku; without nunchaku on this host "
                "those nodes will not register, and `check` will report them"
            )
        return Needs(nodes=tuple(checked), comfyui=tuple(comfy))
    if wanted and manifest.comfyui is not None and find_plugin(manifest, catalog) is None:
        result.violations.append(
            Violation(
                field="comfyui.plugins",
                reason=f"the models and checks need {', '.join(dict.fromkeys(wanted))} from ComfyUI-nunchaku, "
                "which comfyui.plugins does not list",
                fix=f"Add to comfyui.plugins: {{name: {catalog.plugin.name}, repo: {catalog.plugin.repo}}}",
            )
        )
    return Needs(nodes=tuple(dict.fromkeys(wanted)), comfyui=tuple(comfy))


def _adopted_torch(manifest: Manifest, facts: Facts) -> TorchInstall | None:
    """The torch of an adopted venv: someone else's, so it is kept rather than swapped."""
    if manifest.python.adopt is None:
        return None
    return venv_torch(facts.venv)


def _torch_pins(
    torch: TorchRelease, cuda: str | None, adopted: TorchInstall | None, venv: Venv | None
) -> dict[str, str]:
    """Version clauses per package: exact for catalog releases, the release series ('==2.13.*') for a torch the
    catalog does not know, and the installed versions where an adopted venv's torch is kept."""
    pins = {"torch": torch.torch, "torchvision": torch.torchvision, "torchaudio": torch.torchaudio}
    if adopted is not None and venv is not None and same_build(adopted, torch.minor, cuda):
        installed = Version(adopted.version).public
        # The catalog's companions fit only its own torch release; for another patch release pip picks them.
        companions = pins if Version(installed) == Version(torch.torch) else {}
        kept = {"torch": installed}
        for name in ("torchvision", "torchaudio"):
            version = venv.packages.get(name) or companions.get(name)
            if version and parse_version(version):
                kept[name] = Version(version).public
        return {name: f"=={version}" for name, version in kept.items()}
    return {
        name: f"=={version}.*" if len(Version(version).release) < 3 else f"=={version}"
        for name, version in pins.items()
        if version
    }


# download.pytorch.org labels its x86_64 wheels with their build (2.10.0+cu130, 2.10.0+cpu); its aarch64
# CPU wheels carry no label. Pinning the label makes a torch of another CUDA build drift, as it must: a
# nunchaku wheel is built for one CUDA major.
LABELLED_TORCH_PLATFORMS = ("linux_x86_64", "win_amd64")


def _with_build_label(pins: dict[str, str], cuda: str | None) -> dict[str, str]:
    """Exact pins get the index's build label ('==2.10.0' -> '==2.10.0+cu130'); a series ('==2.13.*') cannot."""
    label = "cpu" if cuda is None else "cu" + cuda.replace(".", "")
    return {name: clause if clause.endswith(".*") else f"{clause}+{label}" for name, clause in pins.items()}


def _fill_choices(result: Resolution, manifest: Manifest, catalog: Catalog, host: Host, combo: Combo,
                  facts: Facts) -> None:
    torch = combo.torch
    if torch is None:
        return
    adopted = _adopted_torch(manifest, facts)
    pins = _torch_pins(torch, combo.cuda, adopted, facts.venv)
    kept = adopted is not None and same_build(adopted, torch.minor, combo.cuda)
    labelled = pins
    if manifest.torch.index_url is None and not kept and host.platform in LABELLED_TORCH_PLATFORMS:
        labelled = _with_build_label(pins, combo.cuda)
    requirements = [f"{p}{labelled[p]}" if p in labelled else p for p in manifest.torch.packages]
    index_url = manifest.torch.index_url or catalog.torch_index_url(combo.cuda)
    build = f"CUDA {combo.cuda} build" if combo.cuda else "CPU build"
    if combo.release is not None and combo.build is not None and host.building:
        why = f"nunchaku {combo.release.version} is built on the host against this torch (CUDA {combo.cuda})"
    elif combo.release is not None and combo.build is not None:
        why = (
            f"the nunchaku {combo.release.version} wheel is built for torch {combo.build.torch} with CUDA {combo.cuda}"
        )
    elif torch.uncertain:
        why = "the torch release torch.version asks for" + ("" if combo.cuda is None else ", in a CUDA build the GPU "
                                                            "and driver support")
    elif combo.cuda is None:
        why = "newest torch release in the catalog with a CPU build for this Python"
    else:
        why = "newest torch release whose CUDA build the GPU and driver support"
    if kept and facts.venv is not None:
        why = f"the torch installed in the adopted venv {facts.venv.path}, kept as it is" + (
            "" if combo.release is None else
            f"; nunchaku {combo.release.version} is built on the host against it" if host.building else
            f"; the nunchaku {combo.release.version} wheel is built for its torch {torch.minor}"
        )
    elif torch.uncertain:
        why = f"torch {torch.torch} is not in the catalog (taken as asked, torchvision/torchaudio left to pip); {why}"
    if combo.cuda and host.driver:
        floor = catalog.driver_floor(combo.cuda)
        why += (f"; driver {host.driver} meets CUDA {combo.cuda}'s floor {floor}" if floor
                else f"; the catalog knows no driver floor for CUDA {combo.cuda}")
    if manifest.torch.version != "auto":
        why += f" (torch.version {manifest.torch.version})"
    if manifest.torch.index_url:
        why += "; index URL from torch.index_url"
    result.torch = TorchChoice(
        version=pins["torch"].removeprefix("=="),
        torchvision=pins.get("torchvision", "").removeprefix("=="),
        torchaudio=pins.get("torchaudio", "").removeprefix("=="),
        cuda=combo.cuda,
        index_url=index_url,
        requirements=requirements,
        why=f"{build}: {why}",
    )
    if combo.release is not None and combo.build is not None and host.platform:
        if host.building:
            fill_source_build(result, manifest, catalog, host, combo, facts)
        else:
            _fill_nunchaku(result, manifest, catalog, host, combo)
    _fill_plugin(result, manifest, catalog, host, combo)
    if manifest.comfyui is not None:
        ref = manifest.comfyui.ref
        version = combo.comfyui
        if ref == "auto":
            ref = catalog.comfyui_tag(version) if version else "master"
            why = "newest ComfyUI release in the catalog that meets every node and model requirement"
        else:
            why = "pinned by comfyui.ref" + ("" if version else " (not a version: requirements not checked)")
            if version and not catalog.comfyui_confirmed(version) and catalog.comfyui_releases():
                why += "; the catalog knows this release only from issues"
        result.comfyui = ComfyUIChoice(repo=manifest.comfyui.repo, ref=ref, version=version, why=why)


def _fill_nunchaku(result: Resolution, manifest: Manifest, catalog: Catalog, host: Host, combo: Combo) -> None:
    release, build = combo.release, combo.build
    assert release is not None and build is not None and host.platform is not None
    filename = catalog.wheel_filename(release, build, host.python, host.platform)
    urls = catalog.wheel_urls(release, filename)
    outside = catalog.nunchaku_release(release.version) is None
    why = (
        ("newest release" if manifest.nunchaku.version == "auto" else f"nunchaku.version {manifest.nunchaku.version}")
        + f" with a {host.platform} {host.python} wheel for torch {build.torch} (CUDA {build.cuda}) "
        + (f"that has {host.arch} kernels" if not outside else "(not in the catalog: its kernels are not checked)")
    )
    if combo.plugin is not None:
        why += f" and works with ComfyUI-nunchaku {combo.plugin.version}"
    if build.nightly:
        why += (
            f"; built against a torch {build.torch} nightly, installed with stable torch "
            f"{combo.torch.torch if combo.torch else build.torch} (nunchaku.allow_nightly_torch_builds)"
        )
        result.notes.append(
            f"the nunchaku wheel {filename} was compiled against a PyTorch nightly; "
            "it may fail to import on the stable release (issue NK#774)"
        )
    if (release.builds_uncertain or build.uncertain) and not outside:
        result.notes.append(f"the catalog is not certain that {filename} exists")
    if manifest.nunchaku.wheel_url:
        filename = basename(urlsplit(manifest.nunchaku.wheel_url).path)
        urls = [manifest.nunchaku.wheel_url]
        why += (
            "; downloaded from nunchaku.wheel_url" if outside
            else "; nunchaku.wheel_url overrides the download (its compatibility is not checked)"
        )
    result.nunchaku = NunchakuChoice(
        version=release.version,
        filename=filename,
        urls=urls,
        torch=build.torch,
        cuda=build.cuda,
        python=host.python,
        platform=host.platform,
        nightly_torch_build=build.nightly,
        sha256=manifest.nunchaku.wheel_sha256,
        why=why,
    )


def _fill_plugin(result: Resolution, manifest: Manifest, catalog: Catalog, host: Host, combo: Combo) -> None:
    """The listed ComfyUI-nunchaku is installed in every mode; without nunchaku its nodes cannot load."""
    found = find_plugin(manifest, catalog)
    if found is None:
        return
    index, spec = found
    repo = catalog.current_plugin_repo(spec.repo)
    if repo is not None:
        result.notes.append(
            f"comfyui.plugins[{index}].repo {spec.repo} is an old name of {repo}; the new name is used "
            "(GitHub redirects the old one, but a mirror of it stops at the rename)"
        )
    release = combo.plugin
    without = "" if result.mode == "nunchaku" else "; its nunchaku nodes cannot load without nunchaku on this host"
    settings, problems = resolve_settings(manifest, catalog, host, index, spec, release, result)
    result.violations += problems
    if release is None:
        result.plugin = PluginChoice(
            name=spec.name,
            repo=repo or spec.repo,
            ref=spec.ref,
            version=None,
            nodes=[],
            settings=settings,
            why="pinned ref the catalog does not know; compatibility not checked" + without,
        )
        return
    ref = spec.ref if spec.ref != "auto" else catalog.plugin_tag(release)
    chosen = "pinned by ref" if spec.ref != "auto" else "newest release"
    if combo.release is not None:
        backend = combo.release.version
        why = f"{chosen} that works with nunchaku {backend} (needs {release.backend})"
        short = sorted(n for n, floor in release.node_backend.items() if version_key(backend) < version_key(floor))
        if short:
            result.notes.append(
                f"with nunchaku {backend}, ComfyUI-nunchaku {release.version} cannot register {', '.join(short)} "
                f"(needs nunchaku >= {', '.join(release.node_backend[n] for n in short)}); "
                "nothing this manifest uses, so ComfyUI logs it as an import failure and carries on"
            )
        if release.warns_outside and version_key(backend) not in specifier(release.warns_outside):
            result.notes.append(
                f"ComfyUI-nunchaku {release.version} logs a warning at start-up with nunchaku {backend}: it lists "
                f"only nunchaku {release.warns_outside.removeprefix('==')} as supported (its nodes still load)"
            )
    else:
        why = f"{chosen} whose ComfyUI and Python requirements fit" + without
    result.plugin = PluginChoice(
        name=spec.name,
        repo=repo or spec.repo,
        ref=ref,
        version=release.version,
        nodes=catalog.plugin_nodes(release),
        settings=settings,
        why=why,
    )


def _model_vram(entry: ModelEntry | None, choice: ModelChoice) -> float | None:
    if entry is None:
        return None
    if choice.fallback and entry.fallback is not None:
        return entry.fallback.min_vram_gib
    return entry.min_vram_gib


def _check_capacity(
    result: Resolution, manifest: Manifest, facts: Facts, catalog: Catalog, host: Host, plan: ModelPlan
) -> None:
    total_mib = host.gpu.memory_total_mib if host.gpu else None
    if total_mib is not None and host.mode != "cpu":
        needs = [(v, m) for e, m in zip(plan.entries, plan.models, strict=True) if (v := _model_vram(e, m))]
        if needs:
            need, model = max(needs, key=lambda pair: pair[0])
            have = total_mib / 1024
            # Boards sold as "24 GB" report a little less (24564 MiB), so allow half a GiB of slack.
            if have + 0.5 < need:
                result.violations.append(
                    Violation(
                        field="models",
                        reason=f"{model.filename} needs about {need:g} GiB of GPU memory; GPU "
                        f"{manifest.gpu.index} has {have:.1f} GiB",
                        fix="Choose a smaller model or variant (rank 32), or use a GPU with more memory",
                    )
                )
    free = facts.disk_free_bytes
    sized = [m.size for m in plan.models if m.size is not None]
    unknown = [m.filename for m in plan.models if m.size is None]
    models_root = manifest.comfyui.models_root if manifest.comfyui else None
    if models_root and models_root.startswith("/") and plan.models:
        # The models go to an extra root, another disk: each download checks that disk's space before it starts.
        result.notes.append(f"models go to {models_root}, outside the target root: the disk check counts only "
                            "the packages; each download checks the space there before its first byte")
        sized, unknown = [], []
    if unknown:
        result.notes.append(f"sizes unknown for {', '.join(unknown)}; the disk check leaves them out")
    if free is None:
        return
    need_bytes = sum(sized) + (catalog.torch.venv_bytes if facts.venv is None or facts.venv.torch is None else 0)
    if host.building:
        need_bytes += catalog.nunchaku.source_build.disk_bytes
    if need_bytes > free:
        result.violations.append(
            Violation(
                field="models",
                reason=f"about {need_bytes / 1e9:.1f} GB is needed (models and packages"
                + (", and building nunchaku" if host.building else "") + ") but only "
                f"{free / 1e9:.1f} GB is free under {facts.root or 'the target root'}",
                fix="Free disk space, move target.root to a larger disk, or drop models",
            )
        )
