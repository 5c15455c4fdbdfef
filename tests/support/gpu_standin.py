"""A GPU for hosts that have none: an `nvidia-smi` stand-in that answers the agent's two calls in the real
tool's output format, reached through a wrapper interpreter so that each host of a fleet has its own."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

_BANNER = ("+-----------------------------------------------------------------------------------------+\n"
           "| NVIDIA-SMI {driver}             Driver Version: {driver}     CUDA Version: {cuda}     |\n"
           "+-----------------------------------------+------------------------+----------------------+\n")


def gpu_python(directory: Path, name: str, compute_cap: str, memory_mib: int = 24564,
               driver: str = "570.124.04", cuda: str = "12.8") -> str:
    """Path of an interpreter for `target.python` whose agent sees one GPU called `name`."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    query = f"0, {name}, {compute_cap}, {memory_mib}, 1, {driver}"
    banner = _BANNER.format(driver=driver, cuda=cuda)
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n"
                   f"  --query-gpu=*) echo '{query}' ;;\n"
                   f"  *) printf '%s' '{banner}' ;;\nesac\n")
    smi.chmod(0o755)
    python = directory / "python3"
    real = shutil.which("python3") or sys.executable
    python.write_text(f"#!/bin/sh\nPATH='{bin_dir}':\"$PATH\" exec '{real}' \"$@\"\n")
    python.chmod(0o755)
    return str(python)
