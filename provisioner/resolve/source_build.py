"""Source builds of nunchaku: when one replaces the prebuilt wheel, which torch/CUDA it compiles against,
for which SM targets, and what the host must have; a pure function of (Manifest, Facts, Catalog) like the rest."""

from __future__ import annotations

import hashlib
import json

from packaging.version import InvalidVersion, Version

from provisioner.catalog import Build, Catalog, NunchakuRelease, arch_number, version_key
from provisioner.facts import Facts, TorchInstall
from provisioner.manifest.model import Manifest
from provisioner.resolve.combo import Combo, Needs
from provisioner.resolve.host import Host, can_build
from provisioner.resolve.outside import assumed_cuda_builds, minor_of
from provisioner.resolve.result import (
    BuildPrerequisites,
    NunchakuChoice,
    Resolution,
    SourceBuildChoice,
    SubmoduleChoice,
    Violation,
)
from provisioner.resolve.source_checks import toolchain_violations
from provisioner.resolve.stack import search_nunchaku

OVERRIDE_FIELD = "nunchaku.build_options.allow_unsupported_arch"


def spelled_arch(catalog: Catalog, arch: str) -> str:
    """sm_121 -> '121a', sm_86 -> '86': setup.py's spelling (it adds 'a' where an nvcc floor enables it)."""
    number = arch_number(arch)
    plain = str(number) if number is not None else arch.removeprefix("sm_")
    return f"{plain}a" if catalog.arch_min_nvcc(f"{plain}a") is not None else plain


def override_warning(catalog: Catalog, arch: str) -> str | None:
    """The loud line every report carries when an unsupported arch is built behind the override."""
    unsupported = catalog.unsupported_arch(arch)
    if unsupported is None:
        return None
    return (f"unsupported-arch override: sm_{arch} is not in nunchaku's list; built for diagnostics; "
            f"{unsupported.effect}")


def search_backend(manifest: Manifest, catalog: Catalog, host: Host, needs: Needs, adopted: TorchInstall | None,
                   facts: Facts) -> tuple[Combo | None, list[Violation], list[str]]:
    """A prebuilt wheel where one fits; a source build where the manifest asks for one, or (auto) none fits."""
    if not host.building:
        combo, violations, notes = search_nunchaku(manifest, catalog, host, needs, adopted)
        if combo is not None or manifest.nunchaku.build != "auto":
            return combo, violations, notes
        if not can_build(facts):
            notes.append("nunchaku.build: auto builds from source only where the host's facts show an nvcc "
                         + ("(these come from an agent that does not report compilers)" if facts.toolchain is None
                            else "(this host has none)")
                         + "; nunchaku.build: source builds regardless, and the host's preflight checks nvcc")
            return combo, violations, notes
        built, build_problems, build_notes = search_source(manifest, catalog, host, needs, adopted, facts)
        if built is None:
            notes.append("a source build does not fit either: " + "; ".join(v.reason for v in build_problems))
            return combo, violations, notes
        host.wheels_impossible = "; ".join(v.reason for v in violations)
        host.building = True
        combo, violations, notes = built, build_problems, build_notes
    else:
        combo, violations, notes = search_source(manifest, catalog, host, needs, adopted, facts)
    if host.wheels_impossible and combo is not None:
        notes.insert(0, f"no prebuilt nunchaku wheel fits ({host.wheels_impossible}); nunchaku.build: "
                     f"{manifest.nunchaku.build} builds it from source on the host")
    return combo, violations, notes


def search_source(manifest: Manifest, catalog: Catalog, host: Host, needs: Needs, adopted: TorchInstall | None,
                  facts: Facts) -> tuple[Combo | None, list[Violation], list[str]]:
    """The newest combination nunchaku can be built for on this host, torch and CUDA included."""
    target = spelled_arch(catalog, host.arch or "")
    floor = catalog.arch_min_nvcc(target)
    allowed = manifest.nunchaku.build_options.allow_unsupported_arch and catalog.unsupported_arch(target)
    minors: dict[str, set[str]] = {t.minor: set(t.cuda) for t in catalog.torch_releases()}
    extra = [adopted.version] if adopted is not None else []
    if manifest.torch.version[:1].isdigit():
        extra.append(manifest.torch.version)
    for version in extra:
        cudas = minors.setdefault(minor_of(version), set())
        if adopted is not None and adopted.cuda:
            cudas.add(adopted.cuda)
        if not cudas:  # a torch the catalog does not know: the CUDA builds pinned, else the newest release's
            cudas.update(assumed_cuda_builds(catalog, manifest.cuda.version))
    builds = [Build(torch=minor, cuda=cuda) for minor, cudas in minors.items() for cuda in sorted(cudas)
              if floor is None or version_key(cuda) >= version_key(floor)]
    platform = host.platform or ""
    candidates: list[tuple[NunchakuRelease, Build]] = []
    for release in catalog.nunchaku_releases():
        if target not in catalog.official_arches(release.version) and not allowed:
            continue
        buildable = release.model_copy(update={"builds": builds, "platforms": [platform], "archs": {},
                                               "python_exclusions": [], "hosts": []})
        candidates += [(buildable, build) for build in builds]
    nvcc = facts.toolchain.nvcc if facts.toolchain else None
    nvcc_major = nvcc.major if nvcc else None

    def fits_nvcc(combo: Combo) -> bool:
        return nvcc_major is None or (combo.cuda or "").split(".")[0] == str(nvcc_major)

    if not candidates:
        return None, [Violation(
            field="nunchaku.version",
            reason=f"no nunchaku release in the catalog lists sm_{target} among the archs its setup.py builds",
            fix="Use a GPU nunchaku supports, or set nunchaku.enabled: false",
        )], []
    return search_nunchaku(manifest, catalog, host, needs, adopted, source_builds=candidates, prefer=fits_nvcc)


def fill_source_build(result: Resolution, manifest: Manifest, catalog: Catalog, host: Host, combo: Combo,
                      facts: Facts) -> None:
    """The nunchaku choice for a wheel built on the host, with every prerequisite the facts can refute."""
    release, build, torch = combo.release, combo.build, result.torch
    assert release is not None and build is not None and torch is not None and host.platform is not None
    options = manifest.nunchaku.build_options
    source = manifest.nunchaku.source
    hosting = catalog.nunchaku.source_build
    default_ref = hosting.tag.format(version=release.version)
    pinned = source.repo is None and source.ref in (None, default_ref)
    repo = source.repo or hosting.repo
    ref = source.ref or default_ref
    commit = release.git.commit if pinned and release.git else None
    submodules = [SubmoduleChoice(path=s.path, url=s.url, commit=s.commit if pinned else None)
                  for s in catalog.source_submodules(release)]
    toolchain = facts.toolchain
    nvcc = toolchain.nvcc if toolchain else None
    nvcc_release = nvcc.release if nvcc and nvcc.release else build.cuda
    arches, mode, added, problems = _arches(manifest, catalog, host, release.version, nvcc_release)
    result.violations += problems
    warnings = [w for a in added if (w := override_warning(catalog, a))]
    torch_version = torch.version.removesuffix(".*")
    filename = catalog.source_wheel_filename(release.version, build.cuda, minor_of(torch_version), host.python,
                                             host.platform)
    prerequisites = BuildPrerequisites(
        nvcc_major=build.cuda.split(".")[0], gcc_min=hosting.gcc_min, min_free_bytes=hosting.disk_bytes,
        job_memory_bytes=hosting.job_memory_bytes,
    )
    result.violations += toolchain_violations(manifest, facts, prerequisites)
    key = build_key(release.version, host.python, torch_version, build.cuda, arches, host.platform,
                    None if pinned else f"{repo}@{ref}")
    kernel = _kernel_path(catalog, host, added)
    why = (f"no prebuilt wheel is used: nunchaku {release.version} is compiled on the host against torch "
           f"{torch_version} (CUDA {build.cuda}) for {', '.join('sm_' + a for a in arches)} "
           f"(NUNCHAKU_INSTALL_MODE={mode})")
    if not pinned:
        why += f"; source {repo}@{ref} from nunchaku.source (no catalog pins)"
    result.notes += warnings
    choice = SourceBuildChoice(
        version=release.version, repo=repo, ref=ref, commit=commit, submodules=submodules, arches=arches,
        install_mode=mode, add_supported_arches=added,
        max_jobs=options.max_jobs if isinstance(options.max_jobs, int) else None,
        predicted_jobs=predicted_jobs(facts, hosting.job_memory_bytes), cc=options.cc, cxx=options.cxx,
        cuda_home=toolchain.cuda_home if toolchain else None, torch=torch_version, cuda=build.cuda,
        prerequisites=prerequisites, build_key=key, kernel_path=kernel, warnings=warnings, why=why,
    )
    result.nunchaku = NunchakuChoice(
        version=release.version, filename=filename, urls=[], torch=minor_of(torch_version), cuda=build.cuda,
        python=host.python, platform=host.platform, nightly_torch_build=False, why=why, build=choice,
    )


def build_key(version: str, python: str, torch: str, cuda: str, arches: list[str], platform: str,
              source: str | None = None) -> str:
    """sha256 of what makes two builds interchangeable; a fork's repo@ref joins it (same version, other code)."""
    fields = {"nunchaku": version, "python": python, "torch": torch, "cuda": cuda, "arches": sorted(arches),
              "platform": platform}
    if source is not None:
        fields["source"] = source
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()


def predicted_jobs(facts: Facts, job_memory: int) -> int | None:
    """MAX_JOBS as the host computes it for auto: min(cores, MemAvailable // job memory), at least 1."""
    cores = facts.toolchain.cpu_count if facts.toolchain else None
    memory = facts.memory_available_bytes
    if cores is None or memory is None:
        return None
    return max(1, min(cores, memory // job_memory))


def _kernel_path(catalog: Catalog, host: Host, added: list[str]) -> str:
    precision = (host.precision or "int4").upper()
    for arch in added:
        unsupported = catalog.unsupported_arch(arch)
        if unsupported is not None:
            return (f"nunchaku {unsupported.precision.upper()} on sm_{arch} ({unsupported.family}), built behind "
                    f"the override: {unsupported.effect}")
    return f"nunchaku {precision} kernels compiled for {host.arch}"


def _arches(manifest: Manifest, catalog: Catalog, host: Host, version: str,
            nvcc_release: str) -> tuple[list[str], str, list[str], list[Violation]]:
    """(SM targets, NUNCHAKU_INSTALL_MODE, arches added by the override, problems)."""
    options = manifest.nunchaku.build_options
    official = catalog.official_arches(version)
    buildable = [a for a in official if _nvcc_enables(catalog, a, nvcc_release)]
    target = spelled_arch(catalog, host.arch or "")
    problems: list[Violation] = []
    if options.arches == "all":
        if target not in official:
            problems.append(Violation(
                field="nunchaku.build_options.arches",
                reason=f"arches: all builds setup.py's fixed list ({', '.join(official)}), which leaves this "
                f"host's sm_{target} out", fix="Set nunchaku.build_options.arches: auto"))
        return buildable, "ALL", [], problems
    wanted = [target] if options.arches == "auto" else [spelled_arch(catalog, a) for a in options.arches]
    added: list[str] = []
    for arch in dict.fromkeys(wanted):
        if arch in official:
            continue
        if catalog.unsupported_arch(arch) is not None and options.allow_unsupported_arch:
            added.append(arch)
            continue
        unsupported = catalog.unsupported_arch(arch)
        problems.append(Violation(
            field=OVERRIDE_FIELD if unsupported else "nunchaku.build_options.arches",
            reason=f"sm_{arch} is not in nunchaku {version}'s list of supported archs ({', '.join(official)}); "
            "its setup.py refuses to build for it",
            fix=(f"Set {OVERRIDE_FIELD}: true to build it anyway, for diagnostics only ({unsupported.effect})"
                 if unsupported else "Build for an arch in that list, or use a GPU nunchaku supports")))
    if options.arches != "auto" and list(dict.fromkeys(wanted)) != [target]:
        if sorted(wanted) == sorted(buildable):
            return buildable, "ALL", [], problems
        problems.append(Violation(
            field="nunchaku.build_options.arches",
            reason=f"setup.py builds either the visible GPU's arch (sm_{target}) or all of "
            f"{', '.join(buildable)}; [{', '.join(options.arches)}] is neither",
            fix=f"Set nunchaku.build_options.arches to auto, [sm_{target}] or all"))
    if host.gpu is None:
        problems.append(Violation(
            field="nunchaku.build_options.arches",
            reason="the build detects its targets from the GPUs it sees (NUNCHAKU_INSTALL_MODE=FAST), and no GPU "
            "is visible on this host", fix="Set nunchaku.build_options.arches: all, or build on the GPU host"))
    for arch in wanted:
        floor = catalog.arch_min_nvcc(arch)
        if floor is not None and not _nvcc_enables(catalog, arch, nvcc_release):
            problems.append(Violation(
                field="host", reason=f"sm_{arch} needs nvcc >= {floor}; the build would use nvcc {nvcc_release}",
                fix=f"Install the CUDA {floor} toolkit and a torch built with CUDA {floor.split('.')[0]}.x "
                f"(cuda.version: {floor})"))
    return [target] if options.arches == "auto" else list(dict.fromkeys(wanted)), "FAST", added, problems


def _nvcc_enables(catalog: Catalog, arch: str, nvcc_release: str) -> bool:
    floor = catalog.arch_min_nvcc(arch)
    try:
        return floor is None or Version(nvcc_release) >= Version(floor)
    except InvalidVersion:
        return True
