"""What the facts can already refute about a source build: nvcc, the C/C++ compilers, disk and memory.
The host's own preflight checks the same again (and headers, ninja) right before it builds."""

from __future__ import annotations

from provisioner.facts import Compiler, Facts
from provisioner.manifest.model import Manifest
from provisioner.resolve.result import BuildPrerequisites, Violation

NVCC_PLACES = "$CUDA_HOME/bin/nvcc, nvcc on PATH, /usr/local/cuda/bin/nvcc"
GIB = 1024**3


def toolchain_violations(manifest: Manifest, facts: Facts, needs: BuildPrerequisites) -> list[Violation]:
    """Every prerequisite the facts show missing; nothing where the facts do not say (an older agent).
    Disk is left to the resolver's capacity check, which adds the build to the models and packages."""
    toolchain = facts.toolchain
    problems: list[Violation] = []
    if toolchain is not None:
        problems += _nvcc(toolchain.nvcc, toolchain.cuda_home, needs.nvcc_major)
        problems += _compilers(manifest, facts, needs.gcc_min)
    memory = facts.memory_available_bytes
    if memory is not None and memory < needs.job_memory_bytes:
        problems.append(Violation(
            field="host", reason=f"one compiler job of the nunchaku build needs about "
            f"{needs.job_memory_bytes / GIB:.0f} GiB of memory; {memory / GIB:.1f} GiB is available",
            fix="Free memory (stop other work) or build on a larger host and let the controller cache push the wheel"))
    return problems


def _nvcc(nvcc: Compiler | None, cuda_home: str | None, major: str | None) -> list[Violation]:
    if nvcc is None:
        where = f" (CUDA_HOME={cuda_home} has no bin/nvcc)" if cuda_home else ""
        return [Violation(
            field="host", reason=f"nunchaku must be built here, and no nvcc was found{where}; looked in {NVCC_PLACES}",
            fix=f"Install the CUDA {major}.x toolkit (it must match torch's CUDA major) or set CUDA_HOME to it")]
    if major is not None and nvcc.major is not None and str(nvcc.major) != major:
        return [Violation(
            field="host", reason=f"{nvcc.path} is nvcc {nvcc.release or nvcc.version}, but torch is built with CUDA "
            f"{major}.x; torch's cpp_extension refuses a different major",
            fix=f"Install the CUDA {major}.x toolkit and point CUDA_HOME at it, or choose a torch built with CUDA "
            f"{nvcc.major} (cuda.version)")]
    return []


def _compilers(manifest: Manifest, facts: Facts, gcc_min: int) -> list[Violation]:
    options = manifest.nunchaku.build_options
    toolchain = facts.toolchain
    assert toolchain is not None
    problems: list[Violation] = []
    named = [(field, path) for field, path in (("cc", options.cc), ("cxx", options.cxx)) if path]
    for field, path in named:
        found = toolchain.compiler(path)
        if found is None:
            continue  # facts gathered without this compiler in the request: the host's preflight checks it
        if found.version is None:
            problems.append(Violation(
                field=f"nunchaku.build_options.{field}",
                reason=f"{path} is not a working compiler on the host ({found.error or 'no version'})",
                fix=f"Point nunchaku.build_options.{field} at gcc/g++ >= {gcc_min}"))
        elif (found.major or 0) < gcc_min:
            problems.append(Violation(
                field=f"nunchaku.build_options.{field}", reason=f"{path} is version {found.version}; nunchaku needs "
                f"gcc >= {gcc_min} (C++20)", fix=f"Point nunchaku.build_options.{field} at gcc/g++ >= {gcc_min}"))
    if not options.cc:
        gcc = toolchain.gcc
        if gcc is None:
            problems.append(Violation(
                field="nunchaku.build_options.cc", reason="nunchaku must be built here, and there is no gcc on PATH",
                fix=f"Install gcc/g++ >= {gcc_min} (build-essential), or set nunchaku.build_options.cc and cxx"))
        elif gcc.version is not None and (gcc.major or 0) < gcc_min:
            problems.append(Violation(
                field="nunchaku.build_options.cc", reason=f"gcc on PATH ({gcc.path}) is {gcc.version}; nunchaku "
                f"needs gcc >= {gcc_min} (C++20)",
                fix=f"Install gcc >= {gcc_min} and set nunchaku.build_options.cc and cxx to it"))
    return problems
