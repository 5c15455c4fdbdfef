"""What a source build needs on the host, checked before anything is fetched or compiled.

Every missing prerequisite is listed at once, each with its fix, so a host is repaired in one pass rather
than one failed hour-long build at a time. The facts are gathered first (`gather`), then judged by a pure
function (`judge`), which is what the unit tests feed with recorded facts.

nvcc is found the way torch.utils.cpp_extension finds CUDA_HOME (the build uses that one): CUDA_HOME
or CUDA_PATH when set, else the nvcc on PATH, else /usr/local/cuda.
"""

from __future__ import annotations

import json
import os
import re

from . import procs
from .fsutil import human_size, which

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

DEFAULT_CUDA_HOME = "/usr/local/cuda"
_NVCC_RELEASE = re.compile(r"release (\d+\.\d+), V(\d+\.\d+\.\d+)")
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
# Run by the venv's interpreter: its headers, its torch (the ABI the wheel is built against), its setuptools.
_VENV_FACTS = r"""
import json, os, sysconfig
out = {"include": sysconfig.get_paths().get("include")}
out["python_h"] = bool(out["include"]) and os.path.isfile(os.path.join(out["include"], "Python.h"))
try:
    import setuptools
    out["setuptools"] = setuptools.__version__
except Exception as exc:
    out["setuptools_error"] = "%s: %s" % (type(exc).__name__, exc)
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = getattr(torch.version, "cuda", None)
except Exception as exc:
    out["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
print("\nPROVISION-FACTS " + json.dumps(out))
"""


def build_env(spec: Dict[str, Any], key: str) -> Optional[str]:
    """A build variable: the spec's value first, then the host's environment."""
    return (spec.get("env") or {}).get(key) or os.environ.get(key) or None


def find_nvcc(spec: Dict[str, Any]) -> Tuple[Optional[str], Optional[str], str]:
    """(nvcc, CUDA_HOME, where it was looked for)."""
    home = build_env(spec, "CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        origin = "the manifest" if (spec.get("env") or {}).get("CUDA_HOME") else "the host's environment"
        nvcc = os.path.join(home, "bin", "nvcc")
        return (nvcc if os.access(nvcc, os.X_OK) else None), home, "CUDA_HOME=%s (from %s)" % (home, origin)
    found = which("nvcc")
    if found:
        return found, os.path.dirname(os.path.dirname(found)), "PATH"
    fallback = os.path.join(DEFAULT_CUDA_HOME, "bin", "nvcc")
    if os.access(fallback, os.X_OK):
        return fallback, DEFAULT_CUDA_HOME, DEFAULT_CUDA_HOME
    return None, None, "PATH and %s/bin (CUDA_HOME is not set)" % DEFAULT_CUDA_HOME


def nvcc_release(output: str) -> Optional[Tuple[str, str]]:
    """('13.0', '13.0.88') from `nvcc --version`, parsed as nunchaku's setup.py parses it."""
    match = _NVCC_RELEASE.search(output)
    return (match.group(1), match.group(2)) if match else None


def compiler_version(output: str) -> Optional[Tuple[int, int]]:
    """(major, minor) from the first line of `gcc --version`: 'gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0'."""
    first = (output.strip().splitlines() or [""])[0]
    match = _VERSION.search(re.sub(r"\([^)]*\)", " ", first))
    return (int(match.group(1)), int(match.group(2))) if match else None


def memory_available() -> Optional[int]:
    """MemAvailable from /proc/meminfo, in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_jobs(prereq: Dict[str, Any], cores: int, available: Optional[int]) -> int:
    """min(cores, MemAvailable // job memory), at least 1."""
    job = int(prereq.get("job_memory_bytes") or 4 << 30)
    by_memory = available // job if available is not None else cores
    return max(1, min(cores, by_memory))


def max_jobs(spec: Dict[str, Any]) -> int:
    if spec.get("max_jobs"):
        return int(spec["max_jobs"])
    return auto_jobs(spec.get("prerequisites") or {}, cpu_cores(), memory_available())


def _free_bytes(path: str) -> int:
    import shutil

    probe = path
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return shutil.disk_usage(probe).free


def _run_version(argv: List[str]) -> Tuple[Optional[str], str]:
    done = procs.run(argv, timeout=60)
    return (done.output if done.ok else None), done.tail()


def gather(spec: Dict[str, Any], python: str, workdir: str) -> Dict[str, Any]:
    """Everything `judge` needs, read from the host."""
    facts: Dict[str, Any] = {"python": python, "workdir": workdir}
    nvcc, cuda_home, looked = find_nvcc(spec)
    facts.update(nvcc=nvcc, cuda_home=cuda_home, nvcc_looked=looked)
    if nvcc:
        output, tail = _run_version([nvcc, "--version"])
        release = nvcc_release(output or "")
        facts["nvcc_release"] = list(release) if release else None
        facts["nvcc_output"] = tail
    for key, default in (("CC", "gcc"), ("CXX", "g++")):
        command = build_env(spec, key) or default
        found = command if os.path.isabs(command) else which(command)
        entry: Dict[str, Any] = {"command": command, "path": found if found and os.access(found, os.X_OK) else None}
        if entry["path"]:
            output, tail = _run_version([entry["path"], "--version"])
            entry["version"] = list(compiler_version(output or "") or []) or None
            entry["first_line"] = (tail.strip().splitlines() or [""])[0]
        facts[key] = entry
    facts["venv"] = _venv_facts(python)
    venv_ninja = os.path.join(os.path.dirname(python), "ninja")
    facts["ninja"] = venv_ninja if os.access(venv_ninja, os.X_OK) else which("ninja")
    facts["free_bytes"] = _free_bytes(workdir)
    facts["cores"] = cpu_cores()
    facts["mem_available"] = memory_available()
    return facts


def _venv_facts(python: str) -> Dict[str, Any]:
    if not os.access(python, os.X_OK):
        return {"missing": True}
    done = procs.run([python, "-c", _VENV_FACTS], env={"PYTHONNOUSERSITE": "1"}, timeout=300)
    for line in reversed(done.output.splitlines()):
        if line.startswith("PROVISION-FACTS "):
            return json.loads(line[len("PROVISION-FACTS "):])  # type: ignore[no-any-return]
    return {"broken": done.tail()}


def judge(spec: Dict[str, Any], facts: Dict[str, Any]) -> List[str]:
    """Every violation, each with its fix; empty when the build can start."""
    prereq = spec.get("prerequisites") or {}
    out: List[str] = []
    out += _nvcc_problems(prereq, facts)
    out += _compiler_problems(prereq, facts)
    out += _venv_problems(spec, prereq, facts)
    if prereq.get("ninja", True) and not facts.get("ninja"):
        out.append("ninja not found in the venv (%s) or on PATH; torch's cpp_extension compiles with it: fix: "
                   "`%s -m pip install ninja`" % (os.path.join(os.path.dirname(facts["python"]), "ninja"),
                                                  facts["python"]))
    need = int(prereq.get("min_free_bytes") or 0)
    if facts["free_bytes"] < need:
        out.append("only %s free on the filesystem of %s; the build needs %s: fix: free space there or move the "
                   "target root" % (human_size(facts["free_bytes"]), facts["workdir"], human_size(need)))
    job = int(prereq.get("job_memory_bytes") or 4 << 30)
    available = facts.get("mem_available")
    if available is not None and available < job:
        out.append("only %s of memory available (MemAvailable); one compiler job needs up to %s: fix: stop what "
                   "holds the memory, add swap, or build on a larger host" % (human_size(available), human_size(job)))
    return out


def _nvcc_problems(prereq: Dict[str, Any], facts: Dict[str, Any]) -> List[str]:
    if not facts.get("nvcc"):
        return ["nvcc not found (looked in %s): fix: install the CUDA toolkit%s and put its bin/ on PATH, or set "
                "build_options / CUDA_HOME to the toolkit" % (
                    facts["nvcc_looked"], " %s.x" % prereq["nvcc_major"] if prereq.get("nvcc_major") else "")]
    release = facts.get("nvcc_release")
    if not release:
        return ["%s --version does not say `release X.Y, VX.Y.Z` (it printed: %s): fix: point CUDA_HOME at a "
                "real CUDA toolkit" % (facts["nvcc"], (facts.get("nvcc_output") or "").strip()[:200])]
    want = prereq.get("nvcc_major")
    if want and release[0].split(".")[0] != str(want):
        return ["nvcc %s (%s) but the venv's torch is built for CUDA %s: torch's cpp_extension refuses to build "
                "with an nvcc whose major differs from torch.version.cuda's: fix: install CUDA %s.x and set "
                "CUDA_HOME to it (or use a torch built for CUDA %s)" % (
                    release[1], facts["nvcc"], want, want, release[0].split(".")[0])]
    return []


def _compiler_problems(prereq: Dict[str, Any], facts: Dict[str, Any]) -> List[str]:
    out = []
    floor = int(prereq.get("gcc_min") or 11)
    for key in ("CC", "CXX"):
        entry = facts[key]
        if not entry["path"]:
            out.append("%s compiler %s not found: fix: install gcc/g++ >= %d (apt-get install build-essential) or "
                       "set build_options.%s" % (key, entry["command"], floor, key.lower()))
            continue
        version = entry.get("version")
        first = entry.get("first_line") or ""
        if "clang" in first.lower():
            continue  # a clang is not held to a gcc version
        if not version:
            out.append("%s compiler %s: cannot read its version from `--version` (%s)" % (key, entry["path"], first))
        elif version[0] < floor:
            out.append("%s compiler %s is %d.%d; nunchaku is C++20 and needs gcc >= %d: fix: install gcc-%d/g++-%d "
                       "and set build_options.cc/cxx to them" % (key, entry["path"], version[0], version[1], floor,
                                                                 floor, floor))
    return out


def _venv_problems(spec: Dict[str, Any], prereq: Dict[str, Any], facts: Dict[str, Any]) -> List[str]:
    venv = facts["venv"]
    python = facts["python"]
    if venv.get("missing"):
        return ["the venv's interpreter %s does not exist: fix: declare the venv (and torch) before the build"
                % python]
    if venv.get("broken"):
        return ["the venv's interpreter %s does not run: %s" % (python, venv["broken"])]
    out = []
    if prereq.get("python_headers", True) and not venv.get("python_h"):
        out.append("Python headers missing: no Python.h in %s (sysconfig's include dir of %s): fix: install the "
                   "interpreter's development package (Debian/Ubuntu: apt-get install python3-dev, or "
                   "python3.X-dev for the venv's version)" % (venv.get("include"), python))
    if venv.get("torch_error"):
        out.append("torch does not import in the venv (%s): the build compiles against it: fix: install the "
                   "resolved torch into the venv first" % venv["torch_error"])
    else:
        out += _label_problems(spec, venv)
    if venv.get("setuptools_error"):
        out.append("setuptools does not import in the venv (%s): the build runs without isolation: fix: `%s -m pip "
                   "install setuptools wheel`" % (venv["setuptools_error"], python))
    return out


def _label_problems(spec: Dict[str, Any], venv: Dict[str, Any]) -> List[str]:
    """The wheel name predicts the torch it is built against (`+cu13.0torch2.11`): compare before compiling."""
    name = os.path.basename(spec["path"])
    match = re.search(r"\+cu([0-9.]+)torch([0-9]+\.[0-9]+)-", name)
    if not match:
        return []
    torch = venv.get("torch") or ""
    have = "cu%storch%s" % (venv.get("torch_cuda"), ".".join(torch.split("+")[0].split(".")[:2]))
    want = "cu%storch%s" % match.groups()
    if have == want:
        return []
    built = name.replace("+" + want + "-", "+" + have + "-", 1)
    return ["the venv's torch %s (CUDA %s) would build %s, but the resolution expects %s: fix: install the "
            "resolved torch into the venv (the ABI must match)" % (torch, venv.get("torch_cuda"), built, name)]
