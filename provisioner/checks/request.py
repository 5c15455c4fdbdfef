"""What to check on a host, from the manifest and the catalog: the host request and the judging criteria."""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioner.catalog import Build, Catalog, load_catalog, parse_version, version_key
from provisioner.checks.criteria import Criteria, WantedModel, w4a4_rules
from provisioner.checks.judge import GROUPS
from provisioner.checks.workflow import fit_workflow, sampler_steps
from provisioner.errors import ProvisionError
from provisioner.input_file import InputFileError, read_input_text
from provisioner.instances import ComfyInstance, comfy_instances
from provisioner.manifest.model import Manifest
from provisioner.resolve.result import Resolution
from provisioner.stack import service_argv

PLATFORM = "linux_x86_64"
# The W4A4 layer check's shapes, [tokens, in_features, out_features]: FLUX.1's projections at 1024x1024
# (4096 image tokens), attention 3072 -> 3072 and MLP 3072 -> 12288. Multiples of 128 (nunchaku's packer
# pads other sizes, which the check does not model).
W4A4_SHAPES = [[4096, 3072, 3072], [4096, 3072, 12288]]


@dataclass
class CheckPlan:
    """The request for the host program, which groups run there, and which are skipped up front."""

    request: dict[str, Any]
    criteria: Criteria
    groups: list[str]
    disabled: dict[str, str] = field(default_factory=dict)
    venv_python: str = ""
    # Groups that cannot run as asked (e.g. smoke when the resolver refuses the manifest): reported as errors.
    refused: dict[str, str] = field(default_factory=dict)
    # The ComfyUI instance these checks are for, where the manifest runs several (service.instances).
    instance: str | None = None


def venv_python(manifest: Manifest) -> str:
    """The target venv's interpreter: the adopted venv's, else `<root>/<python.venv>/bin/python`."""
    if manifest.python.adopt:
        return posixpath.join(manifest.python.adopt, "bin", "python")
    return posixpath.join(manifest.target.root, manifest.python.venv, "bin", "python")


def selected_groups(manifest: Manifest, only: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The groups that will run, and those skipped up front with the reason."""
    unknown = [g for g in only or [] if g not in GROUPS]
    if unknown:
        raise ProvisionError(f"--only: unknown check group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    selected = [g for g in GROUPS if not only or g in only]
    enabled = {"gpu": manifest.checks.gpu, "kernels": manifest.checks.kernels, "smoke": manifest.checks.smoke}
    disabled = {g: f"disabled in the manifest (checks.{g}: false)" for g in selected if not enabled[g]}
    if "smoke" in selected and "smoke" not in disabled and manifest.comfyui is None:
        disabled["smoke"] = "the manifest has no comfyui section"
    return [g for g in selected if g not in disabled], disabled


def needed_nodes(manifest: Manifest, resolution: Resolution) -> list[str]:
    """The nodes this manifest needs: checks.nodes, then the loaders of the models the resolver chose."""
    nodes = list(manifest.checks.nodes)
    nodes += [m.node for m in resolution.models if m.node and m.node not in nodes]
    return list(dict.fromkeys(nodes))


def plan_instance_checks(manifest: Manifest, manifest_dir: Path, only: list[str] | None = None,
                         use_running: bool = False, catalog: Catalog | None = None,
                         resolution: Resolution | None = None, refused: str | None = None) -> list[CheckPlan]:
    """One check plan per ComfyUI instance, each on that instance's GPU and port (see plan_checks)."""
    instances = comfy_instances(manifest, cpu=bool(resolution and resolution.mode == "cpu"))
    catalog = catalog or load_catalog()
    return [plan_checks(manifest, manifest_dir, only, use_running, catalog, resolution, refused, instance,
                        label=len(instances) > 1)
            for instance in instances]


def plan_checks(manifest: Manifest, manifest_dir: Path, only: list[str] | None = None, use_running: bool = False,
                catalog: Catalog | None = None, resolution: Resolution | None = None,
                refused: str | None = None, instance: ComfyInstance | None = None,
                label: bool = False) -> CheckPlan:
    """The check plan for one ComfyUI instance (default: the first). The smoke group needs the host's
    resolution (ComfyUI's command line, the nodes the models need); without one, `refused` says why, and
    the group is reported as an error. The checks run with the instance's CUDA environment, so torch
    sees the service's GPU, as the service does, as device 0."""
    if instance is None:
        instance = comfy_instances(manifest, cpu=bool(resolution and resolution.mode == "cpu"))[0]
    catalog = catalog or load_catalog()
    groups, disabled = selected_groups(manifest, only)
    refusals: dict[str, str] = {}
    if "smoke" in groups and resolution is None:
        refusals["smoke"] = refused or "the stack was not resolved for this host"
        groups = [g for g in groups if g != "smoke"]
    python = venv_python(manifest)
    request: dict[str, Any] = {
        "groups": groups,
        "root": manifest.target.root,
        "venv_python": python,
        "gpu": _gpu_request(manifest, instance),
        "gemm": {"size": 8192, "warmup": 3, "repeats": 10, "inner": 5, "w4a4_shapes": W4A4_SHAPES},
        "nunchaku": _nunchaku_paths(manifest, catalog),
    }
    if "smoke" in groups:
        assert resolution is not None
        request["smoke"] = _smoke_request(manifest, manifest_dir, python, use_running, resolution, instance)
    criteria = Criteria(
        expected_arch=manifest.gpu.arch,
        min_bf16_tflops=manifest.checks.min_bf16_tflops,
        min_speedup=manifest.checks.min_speedup,
        tflops_floor=catalog.tflops_floor,
        driver_floor=catalog.driver_floor,
        wheel_for=lambda version, torch, cuda, python_tag: _wheel_for(catalog, version, torch, cuda, python_tag),
        nodes=needed_nodes(manifest, resolution) if resolution else list(manifest.checks.nodes),
        models=[WantedModel(m.folder, m.file) for m in manifest.models],
        mode=resolution.mode if resolution else None,
        nunchaku_wheel=resolution.nunchaku.filename if resolution and resolution.nunchaku else None,
        built_on_host=_build_fix(resolution),
        node_providers=_node_providers(catalog),
        plugin_settings={s.name: s.values or [] for s in catalog.plugin.settings},
        installed=_installed(manifest, resolution) if resolution else [],
        w4a4=w4a4_rules(catalog),
    )
    return CheckPlan(request=request, criteria=criteria, groups=groups, disabled=disabled, venv_python=python,
                     refused=refusals, instance=instance.name if label else None)


def _gpu_request(manifest: Manifest, instance: ComfyInstance) -> dict[str, Any]:
    """Which device the checks use: the instance's GPU (nvidia-smi index `physical`), which the check
    program, narrowed by `env` as the service is, sees as torch device `index`."""
    if instance.gpu is None:  # CPU mode: nothing to narrow to
        return {"index": manifest.gpu.index, "physical": manifest.gpu.index, "env": {},
                "expected_arch": manifest.gpu.arch}
    return {"index": instance.torch_index, "physical": instance.gpu, "env": instance.env(),
            "expected_arch": manifest.gpu.arch}


def _nunchaku_paths(manifest: Manifest, catalog: Catalog) -> dict[str, Any]:
    """Per arch: the precision nunchaku serves, or the fallback path and why nunchaku cannot serve; and the
    archs whose INT4 MMA is emulated, which the checks take the nunchaku path on only behind the manifest's
    unsupported-arch source-build override."""
    serves: dict[str, str] = {}
    fallbacks: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for info in catalog.gpus.archs:
        if info.precision is not None:
            serves[info.arch] = info.precision
        elif info.fallback == "fp8":
            fallbacks[info.arch] = "fp8"
        if info.reason:
            reasons[info.arch] = f"nunchaku cannot serve {info.arch}: {info.reason}"
    emulated = catalog.emulated_int4()
    return {"enabled": manifest.nunchaku.enabled, "precision": manifest.nunchaku.precision,
            "serves": serves, "fallbacks": fallbacks, "reasons": reasons, "emulated_int4": emulated,
            "unsupported_arch_override": unsupported_arch_override(manifest)}


def unsupported_arch_override(manifest: Manifest) -> bool:
    """nunchaku.build_options.allow_unsupported_arch on a build that may compile from source (source, or auto,
    which builds where no wheel fits: every unsupported arch); a wheel-only build has nothing to override."""
    return manifest.nunchaku.build != "wheel" and manifest.nunchaku.build_options.allow_unsupported_arch


def _smoke_request(manifest: Manifest, manifest_dir: Path, python: str, use_running: bool,
                   resolution: Resolution, instance: ComfyInstance) -> dict[str, Any]:
    assert manifest.comfyui is not None
    workflow = None
    written: list[dict[str, Any]] = []
    skipped = None
    if manifest.checks.workflow:
        workflow = _read_workflow(manifest_dir / manifest.checks.workflow)
        if resolution.mode != "nunchaku":
            # The shipped workflows use the Nunchaku loaders, which need nunchaku on an NVIDIA GPU.
            why = "CPU mode: there is no NVIDIA GPU" if resolution.mode == "cpu" else "nunchaku is not used here"
            skipped = f"{why}, so the workflow's Nunchaku loaders cannot run ({manifest.checks.workflow} not queued)"
            workflow = None
        else:
            workflow, fitted = fit_workflow(workflow, manifest, resolution)
            written = [asdict(w) for w in fitted]
    return {
        "comfyui_dir": posixpath.join(manifest.target.root, manifest.comfyui.path),
        "python": python,
        "root": manifest.target.root,
        "listen": manifest.service.listen,
        "port": instance.port,
        "instance": instance.name,
        # The service's own command line: the smoke test changes only --listen and --port.
        "argv": service_argv(manifest, resolution, instance.port),
        "use_running": use_running,
        "nodes": needed_nodes(manifest, resolution),
        "models": [{"folder": m.folder, "file": m.file} for m in manifest.models],
        "plugins": [p.name for p in manifest.comfyui.plugins],
        "workflow": workflow,
        "workflow_name": manifest.checks.workflow,
        "workflow_skipped": skipped,
        "workflow_written": written,
        "workflow_steps": sampler_steps(workflow) if workflow else None,
        # The first run loads the models; the second is the warm figure the reference numbers are.
        "workflow_runs": 2,
        "start_timeout": 300,
        "workflow_timeout": 900,
    }


def _read_workflow(path: Path) -> dict[str, Any]:
    try:
        workflow = json.loads(read_input_text(path))
    except InputFileError as exc:
        raise ProvisionError(f"checks.workflow: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ProvisionError(f"checks.workflow: {path} is not valid JSON: {exc}") from None
    if not isinstance(workflow, dict) or "nodes" in workflow:
        raise ProvisionError(f"checks.workflow: {path} is not in ComfyUI's API format "
                             "(a mapping of node id -> {class_type, inputs}; use 'Export (API)')")
    return workflow


def _installed(manifest: Manifest, resolution: Resolution) -> list[tuple[str, str, str]]:
    """Each file the resolution installs and where it comes from: the manifest's models[i] (listed first, in
    order), or the standard workflow set the resolver adds after them."""
    listed = len(manifest.models)
    return [(m.folder, m.filename, f"models[{i}]" if i < listed else "its model's standard workflow set")
            for i, m in enumerate(resolution.models)]


def _node_providers(catalog: Catalog) -> dict[str, str]:
    """Node class -> the catalog plugin release that first registers it (for a missing node's fix)."""
    providers: dict[str, str] = {}
    for release in sorted(catalog.plugin_releases(), key=lambda r: version_key(r.version)):
        for node in catalog.plugin_nodes(release):
            providers.setdefault(node, f"{catalog.plugin.name} (from {catalog.plugin_tag(release)})")
    return providers


def _build_fix(resolution: Resolution | None) -> str | None:
    """The fix for a missing or mismatched nunchaku where the manifest builds it on the host."""
    choice = resolution.nunchaku if resolution else None
    if choice is None or choice.build is None:
        return None
    return (f"run `provision apply` for this manifest: it builds {choice.filename} from source against the "
            f"venv's torch {choice.build.torch} (build key {choice.build.build_key}) and installs it")


def _wheel_for(catalog: Catalog, version: str | None, torch: str, cuda: str | None,
               python_tag: str | None) -> str | None:
    """The nunchaku wheel file for this torch/CUDA/Python: of the installed release, else the newest that has one."""
    python_tag = python_tag or "cp312"
    wanted = parse_version(version.split("+", 1)[0]) if version else None
    releases = catalog.nunchaku_releases()
    if wanted is not None:
        releases = sorted(releases, key=lambda r: parse_version(r.version) != wanted)
    cuda_minor = ".".join(cuda.split(".")[:2]) if cuda else None
    # Before 1.2.1 wheel names carry no CUDA, so a build for another CUDA of the same torch still fits.
    for same_cuda in (True, False):
        for release in releases:
            if release.python and python_tag not in release.python:
                continue
            for build in release.builds:
                if build.torch != torch or build.nightly or (same_cuda and cuda_minor and build.cuda != cuda_minor):
                    continue
                return catalog.wheel_filename(release, Build(torch=build.torch, cuda=build.cuda), python_tag, PLATFORM)
    return None
