"""The resolver: a pure function of (Manifest, Facts, Catalog) that picks the GPU precision, torch build,
nunchaku wheel, ComfyUI-nunchaku and ComfyUI refs and concrete model files, or reports every violation."""

from __future__ import annotations

from posixpath import basename
from urllib.parse import urlsplit

from provisioner.catalog import Catalog, ModelEntry
from provisioner.facts import Facts
from provisioner.manifest.model import Manifest
from provisioner.resolve.combo import Combo, Needs
from provisioner.resolve.host import Host, assess_host
from provisioner.resolve.models import ModelPlan, plan_models
from provisioner.resolve.plain import search_plain
from provisioner.resolve.plugin import find_plugin
from provisioner.resolve.render import render_resolution
from provisioner.resolve.result import (
    ComfyUIChoice,
    GpuChoice,
    ModelChoice,
    NunchakuChoice,
    PluginChoice,
    Resolution,
    TorchChoice,
    Violation,
)
from provisioner.resolve.stack import search_nunchaku

__all__ = [
    "ComfyUIChoice",
    "GpuChoice",
    "ModelChoice",
    "NunchakuChoice",
    "PluginChoice",
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
    plan = plan_models(manifest.models, catalog, host.precision, nunchaku)
    result.notes += plan.notes
    result.violations += plan.violations
    needs = _needs(manifest, catalog, plan, nunchaku, result)
    if nunchaku and host.no_wheels:
        return _without_choices(result)
    if nunchaku:
        combo, violations, notes = search_nunchaku(manifest, catalog, host, needs, _adopted_torch(manifest, facts))
    else:
        combo, violations, notes = search_plain(manifest, catalog, host, needs, cpu=host.mode == "cpu")
    result.notes += notes
    result.violations += violations
    if combo is not None:
        _fill_choices(result, manifest, catalog, host, combo)
    result.models = plan.models
    _check_capacity(result, manifest, facts, catalog, host, plan)
    _describe_venv(result, facts)
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
        for node in manifest.checks.nodes:
            if node in plugin_nodes:
                result.violations.append(
                    Violation(
                        field="checks.nodes",
                        reason=f"checks.nodes lists {node}, but ComfyUI-nunchaku is not used on this host",
                        fix=f"Remove {node} from checks.nodes",
                    )
                )
        if find_plugin(manifest, catalog) is not None:
            result.notes.append("ComfyUI-nunchaku is listed but skipped: nunchaku is not used on this host")
        return Needs(nodes=(), comfyui=tuple(comfy))
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


def _adopted_torch(manifest: Manifest, facts: Facts) -> str | None:
    """When adopting a venv, its torch ('2.7+cu12.8') is preferred so it is not reinstalled."""
    torch = facts.venv.torch if facts.venv else None
    if manifest.python.adopt is None or torch is None or not torch.cuda:
        return None
    minor = ".".join(torch.version.split("+")[0].split(".")[:2])
    return f"{minor}+cu{torch.cuda}"


def _fill_choices(result: Resolution, manifest: Manifest, catalog: Catalog, host: Host, combo: Combo) -> None:
    torch = combo.torch
    if torch is None:
        return
    pins = {"torch": torch.torch, "torchvision": torch.torchvision, "torchaudio": torch.torchaudio}
    requirements = [f"{p}=={pins[p]}" if p in pins else p for p in manifest.torch.packages]
    index_url = manifest.torch.index_url or catalog.torch_index_url(combo.cuda)
    build = f"CUDA {combo.cuda} build" if combo.cuda else "CPU build"
    if combo.release is not None and combo.build is not None:
        why = (
            f"the nunchaku {combo.release.version} wheel is built for torch {combo.build.torch} with CUDA {combo.cuda}"
        )
    elif combo.cuda is None:
        why = "newest torch release in the catalog with a CPU build for this Python"
    else:
        why = "newest torch release whose CUDA build the GPU and driver support"
    if combo.cuda and host.driver:
        why += f"; driver {host.driver} meets CUDA {combo.cuda}'s floor {catalog.driver_floor(combo.cuda)}"
    if manifest.torch.version != "auto":
        why += f" (torch.version {manifest.torch.version})"
    if manifest.torch.index_url:
        why += "; index URL from torch.index_url"
    result.torch = TorchChoice(
        version=torch.torch,
        torchvision=torch.torchvision,
        torchaudio=torch.torchaudio,
        cuda=combo.cuda,
        index_url=index_url,
        requirements=requirements,
        why=f"{build}: {why}",
    )
    if combo.release is not None and combo.build is not None and host.platform:
        _fill_nunchaku(result, manifest, catalog, host, combo)
    _fill_plugin(result, manifest, catalog, combo)
    if manifest.comfyui is not None:
        ref = manifest.comfyui.ref
        version = combo.comfyui
        if ref == "auto":
            ref = catalog.comfyui_tag(version) if version else "master"
            why = "newest ComfyUI release in the catalog that meets every node and model requirement"
        else:
            why = "pinned by comfyui.ref" + ("" if version else " (not a version: requirements not checked)")
        result.comfyui = ComfyUIChoice(repo=manifest.comfyui.repo, ref=ref, version=version, why=why)


def _fill_nunchaku(result: Resolution, manifest: Manifest, catalog: Catalog, host: Host, combo: Combo) -> None:
    release, build = combo.release, combo.build
    assert release is not None and build is not None and host.platform is not None
    filename = catalog.wheel_filename(release, build, host.python, host.platform)
    urls = catalog.wheel_urls(release, filename)
    why = (
        ("newest release" if manifest.nunchaku.version == "auto" else f"nunchaku.version {manifest.nunchaku.version}")
        + f" with a {host.platform} {host.python} wheel for torch {build.torch} (CUDA {build.cuda}) "
        + f"that has {host.arch} kernels"
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
    if release.builds_uncertain or build.uncertain:
        result.notes.append(f"the catalog is not certain that {filename} exists")
    if manifest.nunchaku.wheel_url:
        filename = basename(urlsplit(manifest.nunchaku.wheel_url).path)
        urls = [manifest.nunchaku.wheel_url]
        why += "; nunchaku.wheel_url overrides the download (its compatibility is not checked)"
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


def _fill_plugin(result: Resolution, manifest: Manifest, catalog: Catalog, combo: Combo) -> None:
    found = find_plugin(manifest, catalog)
    if found is None or result.mode != "nunchaku":
        return
    spec = found[1]
    release = combo.plugin
    if release is None:
        result.plugin = PluginChoice(
            name=spec.name,
            repo=spec.repo,
            ref=spec.ref,
            version=None,
            nodes=[],
            why="pinned ref the catalog does not know; compatibility not checked",
        )
        return
    ref = spec.ref if spec.ref != "auto" else catalog.plugin_tag(release)
    backend = combo.release.version if combo.release else "?"
    why = (
        f"{'pinned by ref' if spec.ref != 'auto' else 'newest release'} that works with nunchaku {backend} "
        f"(needs {release.backend})"
    )
    result.plugin = PluginChoice(
        name=spec.name, repo=spec.repo, ref=ref, version=release.version, nodes=catalog.plugin_nodes(release), why=why
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
    if unknown:
        result.notes.append(f"sizes unknown for {', '.join(unknown)}; the disk check leaves them out")
    if free is None:
        return
    need_bytes = sum(sized) + (catalog.torch.venv_bytes if facts.venv is None or facts.venv.torch is None else 0)
    if need_bytes > free:
        result.violations.append(
            Violation(
                field="models",
                reason=f"about {need_bytes / 1e9:.1f} GB is needed (models and packages) but only "
                f"{free / 1e9:.1f} GB is free under {facts.root or 'the target root'}",
                fix="Free disk space, move target.root to a larger disk, or drop models",
            )
        )


def _describe_venv(result: Resolution, facts: Facts) -> None:
    venv = facts.venv
    if venv is None:
        return
    if venv.torch and result.torch and venv.torch.version.split("+")[0] != result.torch.version:
        result.notes.append(f"torch {venv.torch.version} in {venv.path} will be replaced by {result.torch.version}")
    real = venv.nunchaku
    if real and real.real and result.nunchaku and real.version.split("+")[0] != result.nunchaku.version:
        result.notes.append(f"nunchaku {real.version} in {venv.path} will be replaced by {result.nunchaku.version}")
