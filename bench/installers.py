"""pip against uv, installing ComfyUI's real requirements (and a real torch wheel) into a fresh venv from a
package index on loopback, through the same argv the agent runs: cold (empty cache) and warm (cache kept,
new venv). Records bench/results/installers.md.

Run from the repository root: `.venv/bin/python bench/installers.py --torch-wheel /opt/wheels/torch-*.whl`.
The wheelhouse is filled from PyPI once (`pip download`, kept under --work) and served as a PEP 503 index;
the host's pip configuration is set aside for the measured runs (PIP_CONFIG_FILE=/dev/null), so both
installers see the same index and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from provisioner.agent.installers import Installer
from tests.support.servers import serve_directory
from tests.support.wheels import write_simple_index

REPO = Path(__file__).resolve().parents[1]
COMFYUI = Path("/work/.mirror/Comfy-Org+ComfyUI/repo")
UV = Path(sys.executable).parent / "uv"
# The torch family comes from --torch-wheel (PyPI's torch is the CUDA build with ~3 GB of nvidia wheels).
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")


def comfyui_requirements(work: Path, torch_wheel: Path | None) -> tuple[Path, list[str]]:
    """ComfyUI's requirements.txt at the mirror's HEAD; without a torch wheel, the lines that need torch go."""
    text = subprocess.run(["git", "-C", str(COMFYUI), "show", "HEAD:requirements.txt"], capture_output=True,
                          text=True, check=True).stdout
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    constraints: list[str] = []
    if torch_wheel is None:
        needs_torch = (*TORCH_FAMILY, "torchsde", "kornia", "spandrel")
        lines = [line for line in lines if _name(line) not in needs_torch]
    else:
        version = torch_wheel.name.split("-")[1]
        lines = [line for line in lines if _name(line) not in ("torchvision", "torchaudio")]
        constraints = [f"torch=={version}"]
    path = work / "requirements.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, constraints


def _name(line: str) -> str:
    for sep in "<>=~![; ":
        line = line.split(sep, 1)[0]
    return line.strip().lower()


def fill_wheelhouse(work: Path, requirements: Path, constraints: list[str], torch_wheel: Path | None) -> Path:
    house = work / "wheelhouse"
    if (house / ".complete").exists():
        return house
    house.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:", "-d", str(house),
            "-r", str(requirements)]
    if torch_wheel is not None:
        shutil.copy2(torch_wheel, house / torch_wheel.name)
        (work / "constraints.txt").write_text("\n".join(constraints) + "\n")
        argv += ["--find-links", str(house), "-c", str(work / "constraints.txt")]
    subprocess.run(argv, check=True, env=_clean_env(), timeout=1800)
    (house / ".complete").write_text("")
    return house


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))} | {
        "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def fresh_venv(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def measure(work: Path, name: str, index: str, requirements: Path, constraints: Path | None,
            cache: Path) -> float:
    python = fresh_venv(work / "venvs" / name)
    args = ["-r", str(requirements), "--index-url", index]
    if constraints is not None:
        args += ["-c", str(constraints)]
    if name.startswith("uv"):
        installer = Installer("uv", str(python), str(UV), str(cache))
    else:
        installer = Installer("pip", str(python))
        os.environ["PIP_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    installer.install(args, f"-r {requirements.name}")
    elapsed = time.perf_counter() - started
    shutil.rmtree(work / "venvs" / name, ignore_errors=True)
    return elapsed


def uv_install_cost(work: Path, index: str) -> float | None:
    """What `installer: uv` pays once on a host without uv: pip-installing uv's wheel into the root."""
    python = fresh_venv(work / "venvs" / "bootstrap")
    target = work / "uv-tool"
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           "--index-url", index, "uv"], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    return elapsed if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/provision-bench-installers"))
    parser.add_argument("--torch-wheel", type=Path, default=None, help="a real torch wheel (the CPU build)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "installers.md")
    parser.add_argument("--tools", default="pip,uv",
                        help="measure only these; the others keep their runs from the --out file's JSON twin")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    requirements, pins = comfyui_requirements(args.work, args.torch_wheel)
    house = fill_wheelhouse(args.work, requirements, pins, args.torch_wheel)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(house),
                    f"uv=={_uv_version()}"], check=True, env=_clean_env())
    constraints = None
    if pins:
        constraints = args.work / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
    wheels = sorted(house.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels if not w.name.startswith("uv-"))
    index_root = args.work / "index"
    shutil.rmtree(index_root, ignore_errors=True)
    write_simple_index(house, index_root)
    os.environ.update(_clean_env())
    for key in [k for k in os.environ if k.startswith(("PIP_", "UV_")) and k not in _clean_env()]:
        del os.environ[key]
    tools = args.tools.split(",")
    stored = args.out.with_suffix(".json")
    kept = json.loads(stored.read_text()) if stored.exists() else {}
    rows: dict[str, list[float]] = {k: v for k, v in kept.items() if k.split()[0] not in tools}
    with serve_directory(index_root) as base:
        index = f"{base}/simple"
        for _ in range(args.repeat):
            for tool in tools:
                cache = args.work / "cache" / tool
                shutil.rmtree(cache, ignore_errors=True)
                rows.setdefault(f"{tool} cold", []).append(measure(args.work, f"{tool}-cold", index, requirements,
                                                                   constraints, cache))
                rows.setdefault(f"{tool} warm", []).append(measure(args.work, f"{tool}-warm", index, requirements,
                                                                   constraints, cache))
        bootstrap = uv_install_cost(args.work, index)
    stored.write_text(json.dumps(rows, indent=1) + "\n")
    write_report(args, rows, len(wheels) - 1, size, bootstrap)


def _uv_version() -> str:
    return subprocess.run([str(UV), "--version"], capture_output=True, text=True, check=True).stdout.split()[1]


def write_report(args: argparse.Namespace, rows: dict[str, list[float]], count: int, size: int,
                 bootstrap: float | None) -> None:
    best = {name: min(times) for name, times in rows.items()}
    flags = (f" --torch-wheel {args.torch_wheel}" if args.torch_wheel else "") + (
        f" --repeat {args.repeat}" if args.repeat != 1 else "")
    torch = (f", torch {args.torch_wheel.name.split('-')[1]} from a local wheel under a torch== constraint"
             if args.torch_wheel else ", the torch-dependent lines left out")
    once = (f"Installing uv itself on a host without it (`installer: uv`, once per root): {bootstrap:.1f} s."
            if bootstrap is not None else "Installing uv from the index failed.")
    lines = [
        "# pip vs uv: ComfyUI's requirements into a fresh venv",
        "",
        f"Command: `.venv/bin/python bench/installers.py{flags}`",
        "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, {_pip_version()}, "
        f"uv {_uv_version()}. Wheel set: {count} wheels, {size / 1e6:.0f} MB (ComfyUI's requirements.txt at the "
        f"mirror's HEAD, from PyPI{torch}), served as a PEP 503 index on 127.0.0.1. Each run installs into a new "
        "venv through the argv the agent runs (uv: `--index-strategy unsafe-best-match --compile-bytecode "
        "--link-mode copy`, "
        "cache under the run's folder); cold = empty cache, warm = the cache the cold run filled.",
        "",
        "| installer | cold (s) | warm (s) |",
        "| --- | ---: | ---: |",
    ]
    for tool in ("pip", "uv"):
        lines.append(f"| {tool} | {best[tool + ' cold']:.1f} | {best[tool + ' warm']:.1f} |")
    runs = ", ".join(f"{name} {' / '.join(f'{t:.1f}' for t in times)}" for name, times in rows.items())
    lines += [
        "",
        f"uv is {best['pip cold'] / best['uv cold']:.1f}x faster cold and {best['pip warm'] / best['uv warm']:.1f}x "
        "warm (best of the runs).",
        once,
        "",
        f"All runs (s): {runs}",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


def _pip_version() -> str:
    done = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    return done.stdout.split(" from")[0]


if __name__ == "__main__":
    main()
