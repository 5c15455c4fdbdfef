"""The host's compilers, as a source build would find them: nvcc the way torch's cpp_extension looks for
it ($CUDA_HOME, then PATH, then /usr/local/cuda), gcc on PATH, and any compiler the request names."""

from __future__ import annotations

import os
import re
import shutil

from . import procs

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

_NVCC_RELEASE = re.compile(r"release (\d+\.\d+), V(\d+(?:\.\d+)*)")
_DEFAULT_CUDA_HOME = "/usr/local/cuda"


def gather(compilers: List[str]) -> Dict[str, Any]:
    nvcc, cuda_home = _find_nvcc()
    gcc = shutil.which("gcc")
    return {
        "cpu_count": _cpu_count(),
        "nvcc": _nvcc_facts(nvcc) if nvcc else None,
        "cuda_home": cuda_home,
        "gcc": _compiler_facts(gcc) if gcc else None,
        "compilers": [_compiler_facts(path) for path in compilers if isinstance(path, str) and os.path.isabs(path)],
    }


def _cpu_count() -> Optional[int]:
    """CPUs this process may run on (a container's cpuset), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _find_nvcc() -> Tuple[Optional[str], Optional[str]]:
    """(nvcc path or None, CUDA_HOME or None), in torch.utils.cpp_extension's order."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(variable)
        if home:
            candidate = os.path.join(home, "bin", "nvcc")
            return (candidate if os.access(candidate, os.X_OK) else None), home
    on_path = shutil.which("nvcc")
    if on_path:
        return on_path, os.path.dirname(os.path.dirname(on_path))  # as torch does: no realpath
    candidate = os.path.join(_DEFAULT_CUDA_HOME, "bin", "nvcc")
    if os.access(candidate, os.X_OK):
        return candidate, _DEFAULT_CUDA_HOME
    return None, None


def _nvcc_facts(path: str) -> Dict[str, Any]:
    done = procs.run([path, "--version"], timeout=30)
    match = _NVCC_RELEASE.search(done.output) if done.ok else None
    return {"path": path, "release": match.group(1) if match else None, "version": match.group(2) if match else None,
            "error": None if match else done.tail()[-300:] or "no version in its output"}


def _compiler_facts(path: str) -> Dict[str, Any]:
    if not os.access(path, os.X_OK):
        return {"path": path, "version": None, "error": "not an executable file"}
    done = procs.run([path, "-dumpfullversion", "-dumpversion"], timeout=30)
    version = done.output.strip().splitlines()[0].strip() if done.ok and done.output.strip() else None
    if version is not None and not re.match(r"^\d+(\.\d+)*$", version):
        version = None
    return {"path": path, "version": version, "error": None if version else done.tail()[-300:] or "no version"}
