"""Host facts gathered in one call: OS, CPU, memory, disk, Python, systemd, NVIDIA driver and GPUs,
the compilers a source build would use, and what is installed in the target venv. Anything absent is a
null fact, never an error."""

from __future__ import annotations

import os
import platform
import shutil
import sys

from . import procs, toolchain
from .distributions import installed

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


def gather(request: Dict[str, Any]) -> Dict[str, Any]:
    root = os.path.abspath(os.path.expanduser(request["root"]))
    venv = request.get("venv")
    facts = {
        "system": platform.system(),
        "os": _os_release(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "hostname": platform.node(),
        "memory_total_bytes": _meminfo("MemTotal"),
        "memory_available_bytes": _meminfo("MemAvailable"),
        "root": root,
        "disk_free_bytes": _disk_free(root),
        "agent_python": "%d.%d.%d" % sys.version_info[:3],
        "pythons": _pythons(),
        "systemd": os.path.isdir("/run/systemd/system"),
        "in_container": os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"),
        "user": _user(),
        "nvidia": _nvidia(),
        "venv": _venv_facts(os.path.join(root, venv) if venv and not os.path.isabs(venv) else venv),
        "toolchain": toolchain.gather(list(request.get("compilers") or [])),
    }
    comfy_dir = request.get("comfy_dir")
    if comfy_dir:  # asked for by `provision snapshot export` only: it runs git in every custom node
        from . import checkouts

        facts["comfyui"] = checkouts.gather(os.path.join(root, comfy_dir))
    return facts


def _os_release() -> Dict[str, Optional[str]]:
    values: Dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.strip().partition("=")
                values[key] = value.strip('"')
    except OSError:
        pass
    return {"id": values.get("ID"), "version_id": values.get("VERSION_ID"), "pretty": values.get("PRETTY_NAME")}


def _meminfo(key: str) -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _disk_free(root: str) -> Optional[int]:
    probe = root
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent
    return shutil.disk_usage(probe).free


def _user() -> Dict[str, Any]:
    import pwd

    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return {"uid": uid, "name": name}


def _pythons() -> List[Dict[str, str]]:
    found: List[Dict[str, str]] = []
    seen = set()
    for minor in range(8, 16):
        path = shutil.which("python3.%d" % minor)
        if path and os.path.realpath(path) not in seen:
            seen.add(os.path.realpath(path))
            found.append({"command": "python3.%d" % minor, "path": path, "version": "3.%d" % minor})
    return found


def _nvidia() -> Dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"driver": None, "cuda": None, "gpus": []}
    query = procs.run([smi, "--query-gpu=index,name,compute_cap,memory.total,memory.used,driver_version",
                       "--format=csv,noheader,nounits"], timeout=30)
    gpus: List[Dict[str, Any]] = []
    driver = None
    if query.ok:
        for line in query.output.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 6:
                continue
            driver = parts[5]
            cap = parts[2]
            gpus.append({
                "index": _int(parts[0]), "name": parts[1], "compute_capability": cap,
                "arch": "sm_" + cap.replace(".", "") if cap and cap[0].isdigit() else None,
                "memory_total_mib": _int(parts[3]), "memory_used_mib": _int(parts[4]),
            })
    return {"driver": driver, "cuda": _driver_cuda(smi), "gpus": gpus, "error": None if query.ok else query.tail()}


def _driver_cuda(smi: str) -> Optional[str]:
    """Highest CUDA version the driver supports, from nvidia-smi's banner."""
    banner = procs.run([smi], timeout=30)
    for token in banner.output.split("CUDA Version:")[1:2]:
        return token.split()[0].strip("|") or None
    return None


def _int(text: str) -> Optional[int]:
    try:
        return int(float(text))
    except ValueError:
        return None


def _venv_facts(venv: Optional[str]) -> Optional[Dict[str, Any]]:
    if not venv or not os.path.exists(os.path.join(venv, "bin", "python")):
        return None
    dists = installed(venv)
    torch = dists.get("torch")
    nunchaku = dists.get("nunchaku")
    torch_facts = None
    if torch:
        version = torch["version"]
        local = version.partition("+")[2]
        torch_facts = {"version": version, "cuda": _cuda_from_local(local), "local": local or None}
    return {
        "path": venv,
        "torch": torch_facts,
        "nunchaku": _nunchaku_facts(nunchaku) if nunchaku else None,
        "packages": {name: d["version"] for name, d in sorted(dists.items())},
    }


def _cuda_from_local(local: str) -> Optional[str]:
    if local.startswith("cu") and local[2:].isdigit():
        digits = local[2:]
        return "%s.%s" % (digits[:-1], digits[-1])
    if local == "cpu":
        return "cpu"
    return None


def _nunchaku_facts(dist: Dict[str, Any]) -> Dict[str, Any]:
    """The real nunchaku ships a compiled `nunchaku/_C*.so`; the unrelated PyPI package does not."""
    record = os.path.join(dist["dist_info"], "RECORD")
    compiled = False
    try:
        with open(record, encoding="utf-8") as handle:
            compiled = any(line.startswith("nunchaku/_C") for line in handle)
    except OSError:
        pass
    return {"version": dist["version"], "real": compiled, "url": dist.get("url")}
