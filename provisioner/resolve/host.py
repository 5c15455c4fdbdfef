"""What the host allows, independent of package versions: machine, GPU and arch, precision, and whether
nunchaku, plain ComfyUI loaders or a CPU-only install is the way to go."""

from __future__ import annotations

from dataclasses import dataclass, field

from provisioner.catalog import ArchInfo, Catalog, arch_number
from provisioner.facts import Facts, Gpu
from provisioner.manifest.model import Manifest
from provisioner.resolve.no_gpu import NO_GPU_FIX, NO_GPU_REASON
from provisioner.resolve.result import GpuChoice, Mode, Violation

MACHINE_PLATFORMS = {"x86_64": "linux_x86_64", "amd64": "linux_x86_64"}
OLDEST_SUPPORTED_SM = 75


@dataclass
class Host:
    """The host as the resolver sees it; `mode` is None when no install path is possible."""

    mode: Mode | None = None
    platform: str | None = None
    python: str = ""
    arch: str | None = None
    arch_info: ArchInfo | None = None
    gpu: Gpu | None = None
    gpu_choice: GpuChoice | None = None
    precision: str | None = None
    driver: str | None = None
    fallback: str | None = None
    no_wheels: bool = False
    #: Why no prebuilt wheel can exist for this host (aarch64), where a source build may still serve it.
    wheels_impossible: str | None = None
    #: The stack builds nunchaku on the host instead of downloading a wheel.
    building: bool = False
    notes: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)


def assess_host(manifest: Manifest, facts: Facts, catalog: Catalog) -> Host:
    host = Host(python="cp" + manifest.python.version.replace(".", ""), driver=facts.nvidia.driver)
    _check_python_present(manifest, facts, host)
    wants_cpu = _locate_gpu(manifest, facts, host)
    nunchaku = manifest.nunchaku.enabled
    if wants_cpu:
        host.mode = "cpu"
        if nunchaku and manifest.cuda.version == "cpu" and host.gpu is not None:
            host.violations.append(
                Violation(
                    field="cuda.version",
                    reason="nunchaku needs a CUDA build of torch, but cuda.version is 'cpu'",
                    fix="Set cuda.version to auto (or a CUDA version such as 12.8), or set nunchaku.enabled: false",
                )
            )
        elif nunchaku:
            host.notes.append("nunchaku is skipped: it needs an NVIDIA GPU, and this is a CPU-only install")
    elif host.arch is not None:
        _decide_precision(manifest, catalog, host)
    _check_machine(manifest, facts, catalog, host)
    if host.mode == "nunchaku" and manifest.nunchaku.build == "source":
        host.building = True
    _check_impostor(manifest, facts, host)
    _check_driver_floor(manifest, host)
    _check_vram_floor(manifest, host)
    if host.arch is not None:
        host.gpu_choice = _gpu_choice(manifest, catalog, host)
    return host


def _check_python_present(manifest: Manifest, facts: Facts, host: Host) -> None:
    if manifest.python.interpreter or manifest.python.adopt or not facts.pythons:
        return
    if not any(p.version == manifest.python.version for p in facts.pythons):
        found = ", ".join(p.version for p in facts.pythons)
        host.notes.append(
            f"python{manifest.python.version} is not installed on the host (found {found}); it must be installed first"
        )


def _locate_gpu(manifest: Manifest, facts: Facts, host: Host) -> bool:
    """Find the target GPU and its arch; True when the install is CPU-only."""
    spec = manifest.gpu
    if spec.arch == "none" or manifest.cuda.version == "cpu":
        host.gpu = facts.gpu(spec.index)
        return True
    gpus = facts.nvidia.gpus
    if not gpus:
        if spec.arch != "auto":
            host.arch = spec.arch
            host.notes.append(
                f"no GPU is visible on the host; resolving for {spec.arch} as declared in gpu.arch "
                "(driver and memory are not checked)"
            )
            return False
        if spec.allow_cpu:
            host.notes.append("no NVIDIA GPU found; installing the CPU build of torch (gpu.allow_cpu)")
            return True
        detail = f" (nvidia-smi: {facts.nvidia.error.strip()})" if facts.nvidia.error else ""
        host.violations.append(Violation(field="gpu", reason=f"{NO_GPU_REASON}{detail}", fix=NO_GPU_FIX))
        return False
    gpu = facts.gpu(spec.index)
    if gpu is None:
        indexes = ", ".join(str(g.index if g.index is not None else i) for i, g in enumerate(gpus))
        host.violations.append(
            Violation(
                field="gpu.index",
                reason=f"gpu.index is {spec.index} but the host has GPU index {indexes}",
                fix=f"Set gpu.index to one of: {indexes}",
            )
        )
        return False
    host.gpu = gpu
    detected = gpu.sm
    if detected is None:
        host.violations.append(
            Violation(
                field="gpu",
                reason=f"cannot tell the compute capability of GPU {spec.index} ({gpu.name})",
                fix="Set gpu.arch to the GPU's arch (e.g. sm_86)",
            )
        )
        return False
    if spec.arch != "auto" and arch_number(spec.arch) != arch_number(detected):
        host.violations.append(
            Violation(
                field="gpu.arch",
                reason=f"gpu.arch is {spec.arch} but GPU {spec.index} ({gpu.name}) is {detected}",
                fix=f"Set gpu.arch to {detected} (or auto)",
            )
        )
    host.arch = f"sm_{arch_number(detected)}"
    _check_instance_gpus(manifest, facts, host, detected)
    return False


def _check_instance_gpus(manifest: Manifest, facts: Facts, host: Host, arch: str) -> None:
    """Each ComfyUI of service.instances needs its GPU, of the arch the stack is resolved for."""
    gpus = facts.nvidia.gpus
    indexes = ", ".join(str(g.index if g.index is not None else i) for i, g in enumerate(gpus))
    for position, instance in enumerate(manifest.service.instances):
        gpu = facts.gpu(instance.gpu)
        field = f"service.instances[{position}].gpu"
        if gpu is None:
            host.violations.append(Violation(field=field, reason=f"{field} is {instance.gpu} but the host has GPU "
                                             f"index {indexes}", fix=f"Set {field} to one of: {indexes}"))
        elif gpu.sm is not None and arch_number(gpu.sm) != arch_number(arch):
            host.violations.append(Violation(
                field=field, reason=f"GPU {instance.gpu} ({gpu.name}) is {gpu.sm}, but the stack is resolved for "
                f"GPU {manifest.gpu.index} ({arch}): one venv serves every instance",
                fix=f"Leave GPU {instance.gpu} out of service.instances, or use one manifest per GPU arch"))


def _decide_precision(manifest: Manifest, catalog: Catalog, host: Host) -> None:
    """Pick int4/fp4 for the arch, or plain ComfyUI loaders where nunchaku cannot serve it."""
    assert host.arch is not None
    info = catalog.arch(host.arch)
    host.arch_info = info
    wanted = manifest.nunchaku.precision
    number = arch_number(host.arch) or 0
    if not manifest.nunchaku.enabled:
        host.mode = "plain"
        host.notes.append("nunchaku is disabled (nunchaku.enabled: false): plain ComfyUI loaders only")
        return
    family = info.family if info else "unknown"
    if info is not None and info.precision is not None:
        host.mode = "nunchaku"
        host.precision = info.precision
        if wanted != "auto" and wanted != info.precision:
            host.violations.append(
                Violation(
                    field="nunchaku.precision",
                    reason=f"{wanted} models do not run on {host.arch} ({family}); it needs {info.precision} "
                    + (
                        "(FP4 needs Blackwell's FP4 tensor cores)"
                        if wanted == "fp4"
                        else "(nunchaku rejects INT4 models on Blackwell)"
                    ),
                    fix=f"Set nunchaku.precision to {info.precision} (or auto)",
                )
            )
        return
    if _unsupported_build(manifest, catalog, host, family):
        return
    if info is not None and info.reason:
        reason = f"nunchaku cannot run on {host.arch} ({family}): {info.reason}"
    elif number < OLDEST_SUPPORTED_SM:
        reason = f"nunchaku has no build for {host.arch}: GPUs older than Turing (sm_75) lack 4-bit tensor cores"
    else:
        reason = f"{host.arch} is not in the catalog of GPU architectures nunchaku supports"
    fallback = info.fallback if info else None
    if wanted == "auto" and fallback is not None:
        host.mode = "plain"
        host.fallback = (
            f"{reason}. Falling back to {fallback.upper()} models with plain ComfyUI loaders "
            f"({host.arch} runs {fallback.upper()} natively)."
        )
        return
    if wanted != "auto":
        fix = (
            (
                f"Set nunchaku.precision: auto to fall back to {fallback.upper()} models with plain ComfyUI "
                "loaders, or use a Turing, Ampere, Ada or consumer Blackwell GPU"
            )
            if fallback
            else ("Use a Turing, Ampere, Ada or consumer Blackwell GPU, or set nunchaku.enabled: false")
        )
        host.violations.append(Violation(field="nunchaku.precision", reason=reason, fix=fix))
    else:
        host.violations.append(
            Violation(
                field="gpu",
                reason=reason,
                fix="Use a Turing (sm_75) or newer GPU that nunchaku supports, or set nunchaku.enabled: false "
                "for a plain ComfyUI install",
            )
        )


def _unsupported_build(manifest: Manifest, catalog: Catalog, host: Host, family: str) -> bool:
    """An arch nunchaku's setup.py refuses (Hopper) built anyway behind the override; True when it decides."""
    assert host.arch is not None
    spec = manifest.nunchaku
    unsupported = catalog.unsupported_arch(str(arch_number(host.arch)))
    if unsupported is None or spec.build == "wheel":
        return False
    field = "nunchaku.build_options.allow_unsupported_arch"
    if not spec.build_options.allow_unsupported_arch:
        if spec.build != "source":
            return False  # auto: the plain-loader fallback (or its refusal) as without source builds
        host.violations.append(Violation(
            field=field,
            reason=f"nunchaku.build is source, but {host.arch} ({family}) is not in nunchaku's list of supported archs "
            "(its setup.py asserts it)",
            fix=f"Set {field}: true to build it anyway for diagnostics ({unsupported.effect}), or set "
            "nunchaku.build: auto for the plain-loader fallback"))
        return True
    host.mode = "nunchaku"
    host.precision = unsupported.precision
    host.building = True
    return True


def can_build(facts: Facts) -> bool:
    """Whether the facts show a host that could compile nunchaku (an nvcc that answers): auto builds only there."""
    toolchain = facts.toolchain
    return toolchain is not None and toolchain.nvcc is not None and toolchain.nvcc.version is not None


def _check_system(facts: Facts, host: Host) -> bool:
    """Every wheel provision installs is a Linux one; True when the facts describe another system."""
    system = facts.system
    if system is None or system.lower() == "linux":
        return False
    host.no_wheels = True
    host.violations.append(
        Violation(
            field="host",
            reason=f"the facts describe a {system} host ({facts.arch}); provision installs Linux builds only "
            "(torch, the nunchaku wheels, the service), so nothing it resolves would run there",
            fix="Provision a Linux x86_64 host (gather its facts there with `provision facts`), or run ComfyUI "
            f"on this {system} machine by other means",
        )
    )
    return True


def _check_machine(manifest: Manifest, facts: Facts, catalog: Catalog, host: Host) -> None:
    if _check_system(facts, host):
        host.platform = None
        return
    machine = facts.arch.lower()
    host.platform = MACHINE_PLATFORMS.get(machine)
    if host.mode != "nunchaku" or host.platform is not None:
        if host.platform is None:
            host.platform = f"linux_{machine}"
        return
    host.platform = f"linux_{machine}"
    known = catalog.nunchaku.unsupported_machines.get(machine)
    build = manifest.nunchaku.build
    if build == "source" or (build == "auto" and can_build(facts)):
        host.wheels_impossible = known or f"no nunchaku wheels exist for {machine} hosts"
        host.building = True
        return
    host.no_wheels = True
    host.violations.append(
        Violation(
            field="host",
            reason=known or f"no nunchaku wheels exist for {machine} hosts (only linux_x86_64 and win_amd64)",
            fix="Use an x86_64 host; or set nunchaku.build: source to build nunchaku on this host"
            + (" (nunchaku.build: wheel forbids it now)" if build == "wheel" else
               " (auto builds only where the facts show nvcc)")
            + "; or set nunchaku.enabled: false for a plain ComfyUI install",
        )
    )


def _check_impostor(manifest: Manifest, facts: Facts, host: Host) -> None:
    installed = facts.venv.nunchaku if facts.venv else None
    if not manifest.nunchaku.enabled or installed is None or installed.real or facts.venv is None:
        return
    if manifest.python.adopt is None:
        # The venv is provision's own: the nunchaku pin replaces the impostor (shown as drift in the plan).
        host.notes.append(f"the venv has the unrelated PyPI package 'nunchaku' {installed.version}; "
                          "apply replaces it with the resolved wheel")
        return
    host.violations.append(
        Violation(
            field="host",
            reason=f"the venv {facts.venv.path} has the unrelated PyPI package 'nunchaku' {installed.version} "
            "(no compiled nunchaku._C); it shares the import name with the real nunchaku",
            fix=f"Remove it with '{facts.venv.path}/bin/pip uninstall -y nunchaku', then apply again",
        )
    )


def _driver_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def driver_at_least(driver: str, floor: str) -> bool:
    return _driver_tuple(driver) >= _driver_tuple(floor)


def _check_driver_floor(manifest: Manifest, host: Host) -> None:
    floor = manifest.cuda.min_driver
    if floor and host.driver and not driver_at_least(host.driver, floor):
        host.violations.append(
            Violation(
                field="cuda.min_driver",
                reason=f"the NVIDIA driver is {host.driver}, older than cuda.min_driver {floor}",
                fix=f"Upgrade the NVIDIA driver to >= {floor}, or lower cuda.min_driver",
            )
        )


def _check_vram_floor(manifest: Manifest, host: Host) -> None:
    wanted = manifest.gpu.min_vram_gb
    total = host.gpu.memory_total_mib if host.gpu else None
    if wanted is None or total is None:
        return
    have = total / 1024
    if have < wanted:
        host.violations.append(
            Violation(
                field="gpu.min_vram_gb",
                reason=f"GPU {manifest.gpu.index} has {have:.1f} GiB of memory, less than gpu.min_vram_gb {wanted:g}",
                fix="Use a GPU with more memory, or lower gpu.min_vram_gb",
            )
        )


def _gpu_choice(manifest: Manifest, catalog: Catalog, host: Host) -> GpuChoice:
    assert host.arch is not None
    info = host.arch_info or catalog.arch(host.arch)
    gpu = host.gpu
    name = gpu.name if gpu else None
    floor = manifest.checks.min_bf16_tflops or catalog.tflops_floor(host.arch, name)
    vram = round(gpu.memory_total_mib / 1024, 1) if gpu and gpu.memory_total_mib else None
    dtype = info.dtype if info else "bfloat16"
    family = info.family if info else None
    if host.precision:
        why = f"{host.arch} ({family}) runs nunchaku {host.precision.upper()} models in {dtype}"
        if info and info.precision is None:
            why += " only behind nunchaku.build_options.allow_unsupported_arch (a diagnostics build)"
        if info and info.note:
            why += f"; {info.note}"
    elif host.mode == "cpu":
        why = "CPU-only install"
    else:
        why = f"{host.arch} ({family or 'unknown'}) uses plain ComfyUI loaders"
    source = "checks.min_bf16_tflops" if manifest.checks.min_bf16_tflops else "catalog floor"
    if floor is not None:
        why += f"; matmul floor {floor:g} TFLOP/s ({source})"
    return GpuChoice(
        index=manifest.gpu.index if gpu else None,
        name=name,
        arch=host.arch,
        family=family,
        precision=host.precision if host.mode == "nunchaku" else None,  # int4 on Hopper behind the override
        dtype=dtype,
        vram_gib=vram,
        tflops_floor=floor,
        tflops_dtype=info.tflops_dtype if info else "bfloat16",
        why=why,
    )
