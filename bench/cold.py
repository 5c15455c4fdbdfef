"""Cold apply: a fresh host from nothing to a ComfyUI that answers, provision vs a serial script vs comfy-cli.

The stack is `manifests/rtx3090.yaml` on this host through an overlay (CPU mode, see `overlay()`), against
stand-in upstreams on 127.0.0.1 (`bench/cold_upstreams.py`) that share one throttled link: a PEP 503 index
over the real wheels of torch, ComfyUI's and ComfyUI-nunchaku's requirements (filled from PyPI once), the
Hugging Face Hub's layout over files of the model set's sizes times --model-scale, and git mirrors of
ComfyUI and ComfyUI-nunchaku built from local snapshots. Each tool starts from empty directories, an empty
HOME and an empty pip cache; each run ends when ComfyUI answers /system_stats.

    .venv/bin/python bench/cold.py --bandwidth 200MB/s --out bench/results/cold.md

Snapshots (bare git repos): --comfyui-snapshot / $PROVISION_BENCH_COMFYUI_SNAPSHOT and --plugin-snapshot /
$PROVISION_BENCH_PLUGIN_SNAPSHOT. The wheels, mirrors and model files are built once under --cache
($PROVISION_BENCH_CACHE, default ~/.cache/provision-bench/cold), never in the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cold_upstreams import (
    HubFile,
    Throttle,
    Upstreams,
    fill_wheels,
    full_mirror,
    make_model_file,
    one_commit_mirror,
    serve,
)
from bench.common import PROVISION, REPO
from tests.support.servers import free_port

SERIAL_SCRIPT = REPO / "bench" / "cold_serial.sh"
COMFYUI_COMMIT = "a125cd84b054"  # the snapshot's HEAD: comfyui_version.py says 0.3.64
COMFYUI_TAG = "v0.3.64"
PLUGIN_TAG = "v1.2.1"
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1", "torchaudio==2.11.1"]
#: What installing torch alone unpacks: the torch wheels and the CUDA/triton wheels they pull in.
TORCH_SET = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia_[a-z0-9_]+|cuda_[a-z_]+)-")
BUILD_DEPS = ["setuptools", "wheel", "cython", "numpy"]  # insightface ships only an sdist
#: `python.installer: uv` installs uv from the index where the host has none, as on a fresh box.
UV_PIN = "uv==0.13.9"


@dataclass(frozen=True)
class Model:
    hub: HubFile
    folder: str  # under ComfyUI/models
    companion: bool  # a file the catalog adds for the model's standard workflow

    @property
    def name(self) -> str:
        return Path(self.hub.path).name


@dataclass
class Run:
    name: str
    seconds: float | None = None
    served: int = 0
    ok: bool = False
    note: str = ""
    steps: list[tuple[str, float]] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average when it started and when it ended


def parse_rate(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]?)B/s\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"bandwidth {text!r}: write it like 200MB/s (K, M, G are powers of 1000)")
    return float(match.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2).upper()]


# -- preparation (cached, unmeasured) -------------------------------------------------------------------------


def overlay(work: Path, root: Path, port: int, hub: list[Model] | None = None, installer: str = "pip") -> Path:
    """rtx3090.yaml on this GPU-less host. What differs from a GPU box is listed in bench/results/cold.md.

    With `hub`, the companion files are listed with the stand-in's sha256 and size: the catalog records the
    real files' sha256, which content made here cannot have, and lock refuses a Hub that disagrees."""
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "rtx3090-cold.yaml"
    base = os.path.relpath(REPO / "manifests" / "rtx3090.yaml", work)
    manifest.write_text(yaml.safe_dump({
        "extends": base,
        "target": {"connection": "local", "root": str(root)},
        "gpu": {"arch": "auto", "allow_cpu": True},
        "python": {"version": "3.11", "installer": installer},
        "comfyui": {"ref": COMFYUI_TAG},
        # PyPI's 2.14.1 is the CUDA 13.0 build a GPU box gets; with an index named, no +cpu label is pinned.
        "torch": {"version": "2.14.1", "index_url": "https://download.pytorch.org/whl/cu130"},
        "service": {"port": port},
        "checks": {"nodes": ["KSampler"], "workflow": None},
        **({"models": [{**shipped_model(), "companions": False}, *(
            {"repo": m.hub.repo, "file": m.hub.path, "folder": m.folder, "sha256": m.hub.sha256, "size": m.hub.size}
            for m in hub if m.companion)]} if hub else {}),
    }, sort_keys=False))
    return manifest


def shipped_model() -> dict[str, object]:
    shipped = yaml.safe_load((REPO / "manifests" / "rtx3090.yaml").read_text())
    return dict(shipped["models"][0])


def resolved_models(manifest: Path, env: dict[str, str]) -> list[dict[str, object]]:
    done = subprocess.run([str(PROVISION), "resolve", str(manifest), "--json"], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"resolve failed:\n{done.stdout}\n{done.stderr}")
    models: list[dict[str, object]] = json.loads(done.stdout)["models"]
    return models


def build_hub(cache: Path, models: list[dict[str, object]], scale: float) -> tuple[Path, list[Model]]:
    base = cache / "models" / f"scale-{scale:g}"
    files = []
    for model in models:
        repo, path = str(model["repo"]), str(model["file"])
        size = max(1, round(int(str(model["size"])) * scale))
        hub_file = HubFile(repo, path, size, make_model_file(base / repo / path, size))
        files.append(Model(hub_file, str(model["folder"]), model["companion_of"] is not None))
    return base, files


def build_mirrors(cache: Path, comfyui: Path, plugin: Path) -> Path:
    git = cache / "git"
    one_commit_mirror(comfyui, COMFYUI_COMMIT, COMFYUI_TAG, git / "Comfy-Org" / "ComfyUI")
    # comfy-cli clones comfyanonymous/ComfyUI, the old name of the same repository.
    alias = git / "comfyanonymous" / "ComfyUI"
    if not alias.exists():
        alias.parent.mkdir(parents=True, exist_ok=True)
        alias.symlink_to(git / "Comfy-Org" / "ComfyUI")
    full_mirror(plugin, git / "nunchaku-ai" / "ComfyUI-nunchaku")
    return git


def fill_index(cache: Path, comfyui: Path, plugin: Path, python: str) -> Path:
    wheels = cache / "wheels"
    reqs = cache / "requirements"
    reqs.mkdir(parents=True, exist_ok=True)
    for name, repo, ref in (("comfyui.txt", comfyui, COMFYUI_COMMIT), ("plugin.txt", plugin, PLUGIN_TAG)):
        text = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:requirements.txt"], check=True,
                              capture_output=True, text=True).stdout
        (reqs / name).write_text(text)
    fill_wheels(wheels, [reqs / "comfyui.txt", reqs / "plugin.txt"], [*TORCH_PINS, *BUILD_DEPS, UV_PIN], python)
    return wheels


def clean_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """This machine's pip settings (extra indexes, find-links, constraints) must not leak into any tool."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV", "HF_"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update({"HOME": str(home), "PIP_CONFIG_FILE": os.devnull, "PIP_CACHE_DIR": str(home / ".cache" / "pip"),
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "XDG_CACHE_HOME": str(home / ".cache"),
                "XDG_CONFIG_HOME": str(home / ".config"), "PYTHONDONTWRITEBYTECODE": ""})
    env.pop("PYTHONDONTWRITEBYTECODE")
    env.update(extra)
    return env


# -- measuring ------------------------------------------------------------------------------------------------


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop_processes_under(root: Path) -> None:
    """End what a run left running (its ComfyUI), found by its working directory or argv under `root`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(root)) or str(root) in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGTERM)


def timed(run: Run, up: Upstreams, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> bool:
    before = up.served_bytes
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - started
    run.steps.append((Path(argv[0]).name + (" " + argv[1] if len(argv) > 1 else ""), elapsed))
    run.served += up.served_bytes - before
    run.seconds = (run.seconds or 0.0) + elapsed
    if done.returncode != 0:
        run.note = f"`{' '.join(argv[:3])}` exited {done.returncode}; see {log}"
    return done.returncode == 0


def wait_until_answers(run: Run, port: int, started: float, limit: float = 300) -> None:
    while time.perf_counter() - started < limit and not answers(port):
        time.sleep(0.2)
    run.ok = answers(port)
    run.seconds = time.perf_counter() - started
    if not run.ok:
        run.note = run.note or f"ComfyUI did not answer on port {port} within {limit:.0f} s"


def run_provision(work: Path, up: Upstreams, hub: list[Model], mirrors: Path, base_env: dict[str, str],
                  installer: str) -> Run:
    run = Run("provision apply", note=f"python.installer: {installer}")
    port = free_port()
    root = work / "provision" / "root"
    manifest = overlay(work / "provision", root, port, hub, installer)
    env = clean_env(work / "provision" / "home", {**base_env, "PROVISION_MIRRORS": str(mirrors)})
    # A lock is made once and kept beside the manifest; it pins the stand-in files' sizes and sha256.
    locked = subprocess.run([str(PROVISION), "lock", str(manifest)], env=env, capture_output=True, text=True,
                            check=False)
    if locked.returncode != 0:
        run.note = f"provision lock exited {locked.returncode}: {(locked.stdout + locked.stderr)[-400:]}"
        return run
    started = time.perf_counter()
    ok = timed(run, up, [str(PROVISION), "apply", str(manifest)], env, work / "provision", work / "provision.log")
    if ok:
        wait_until_answers(run, port, started)
    stop_processes_under(root)
    shutil.rmtree(work / "provision", ignore_errors=True)
    return run


def run_serial(work: Path, up: Upstreams, base: str, git: Path, hub: list[Model], python: str,
               base_env: dict[str, str]) -> Run:
    run = Run("serial script")
    port = free_port()
    root = work / "serial" / "root"
    models = work / "serial" / "models.txt"
    models.parent.mkdir(parents=True)
    # The paths ComfyUI's folders expect, as the resolution lays them out.
    models.write_text("".join(f"{base}/hf/{m.hub.repo}/resolve/main/{m.hub.path} {m.folder}/{m.name}\n"
                              for m in hub))
    env = clean_env(work / "serial" / "home", {
        **base_env, "ROOT": str(root), "GIT_BASE": f"file://{git}", "COMFYUI_REF": COMFYUI_TAG,
        "PLUGIN_REF": PLUGIN_TAG, "INDEX_URL": f"{base}/simple", "PYTHON": python, "MODELS": str(models),
        "PORT": str(port), "TORCH_PINS": " ".join(TORCH_PINS)})
    started = time.perf_counter()
    if timed(run, up, ["bash", str(SERIAL_SCRIPT)], env, work / "serial", work / "serial.log"):
        wait_until_answers(run, port, started)
    stop_processes_under(root)
    shutil.rmtree(work / "serial", ignore_errors=True)
    return run


def run_comfy_cli(work: Path, up: Upstreams, base: str, git: Path, hub: list[Model], tool_venv: Path,
                  base_env: dict[str, str]) -> Run:
    run = Run("comfy-cli")
    port = free_port()
    space = work / "comfy-cli" / "ComfyUI"
    home = work / "comfy-cli" / "home"
    # `comfy launch --background` starts `comfy` again by name, so its venv must be on PATH.
    path = f"{tool_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    env = clean_env(home, {**base_env, "PATH": path, "PIP_INDEX_URL": f"{base}/simple", "PIP_RETRIES": "0",
                           "PIP_TIMEOUT": "5", "GIT_CONFIG_GLOBAL": str(home / ".gitconfig")})
    subprocess.run(["git", "config", "--global", f"url.file://{git}/.insteadOf", "https://github.com/"],
                   env=env, check=True)
    comfy = str(tool_venv / "bin" / "comfy")
    log = work / "comfy-cli.log"
    cwd = work / "comfy-cli"
    started = time.perf_counter()
    steps = [
        [comfy, "--skip-prompt", "--no-enable-telemetry", f"--workspace={space}", "install", "--cpu",
         "--skip-manager", "--url", "https://github.com/comfyanonymous/ComfyUI"],
        # `comfy node install` resolves names through the Comfy registry (api.comfy.org) and ComfyUI-Manager;
        # neither has a stand-in here, so the plugin goes in the way its README's manual install says.
        ["git", "clone", "-q", "--branch", PLUGIN_TAG, "https://github.com/nunchaku-ai/ComfyUI-nunchaku",
         str(space / "custom_nodes" / "ComfyUI-nunchaku")],
        [str(space / ".venv" / "bin" / "python"), "-m", "pip", "install", "-q", "-r",
         str(space / "custom_nodes" / "ComfyUI-nunchaku" / "requirements.txt")],
    ]
    for model in hub:
        steps.append([comfy, "--skip-prompt", "--no-enable-telemetry", f"--workspace={space}", "model", "download",
                      "--url", f"{base}/hf/{model.hub.repo}/resolve/main/{model.hub.path}",
                      "--relative-path", f"models/{model.folder}", "--filename", model.name])
    steps.append([comfy, "--skip-prompt", "--no-enable-telemetry", f"--workspace={space}", "launch", "--background",
                  "--", "--cpu", "--listen", "127.0.0.1", "--port", str(port)])
    cwd.mkdir(parents=True, exist_ok=True)
    if all(timed(run, up, argv, env, cwd, log) for argv in steps):
        wait_until_answers(run, port, started)
    else:
        run.seconds = time.perf_counter() - started
    stop_processes_under(work / "comfy-cli")
    shutil.rmtree(work / "comfy-cli", ignore_errors=True)
    return run


def torch_install_seconds(work: Path, wheels: Path, python: str) -> dict[str, float]:
    """The longest CPU step no tool can overlap away: unpacking torch and its CUDA wheels into a venv, from
    local files, by pip and by uv (as provision runs it: bytecode compiled, files hard-linked from an empty
    cache of its own)."""
    files = [str(p) for p in sorted(wheels.glob("*.whl")) if TORCH_SET.match(p.name)]
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    argvs = {"pip": lambda venv: [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--no-deps", *files]}
    if uv:
        argvs["uv"] = lambda venv: [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                                    "--no-config", "--no-index", "--no-deps", "--compile-bytecode",
                                    "--link-mode", "hardlink", "--cache-dir", str(work / "torch-alone-uv-cache"),
                                    *files]
    seconds = {}
    for name, argv in argvs.items():
        venv = work / f"torch-alone-{name}"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        env = clean_env(work / "torch-alone-home", {})
        started = time.perf_counter()
        subprocess.run(argv(venv), env=env, check=True)
        seconds[name] = time.perf_counter() - started
        shutil.rmtree(venv)
        shutil.rmtree(work / "torch-alone-uv-cache", ignore_errors=True)
    return seconds


def with_load(measure: Callable[[], Run]) -> Run:
    before = os.getloadavg()[0]
    run = measure()
    run.load = (before, os.getloadavg()[0])
    return run


def comfy_cli_venv(cache: Path, python: str) -> Path:
    """comfy-cli in its own venv, from the machine's usual index (not measured: a user has it already)."""
    venv = cache / "comfy-cli-venv"
    if not (venv / "bin" / "comfy").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "comfy-cli"], check=True)
    return venv


# -- report ---------------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = os.getloadavg()
    return (f"{platform.platform()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; "
            f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end")


def report(args: argparse.Namespace, runs: list[Run], hub: list[Model], archive_bytes: int,
           torch_alone: dict[str, float], load_at_start: float) -> str:
    model_bytes = sum(m.hub.size for m in hub)
    total = model_bytes + archive_bytes
    transfer = total / args.bandwidth
    fastest = min(torch_alone, key=lambda name: torch_alone[name])
    torch_seconds = torch_alone[fastest]
    bound = transfer + torch_seconds
    alone = ", ".join(f"{name} {secs:.1f} s" for name, secs in torch_alone.items())
    how = f"{fastest}, the faster of {alone}" if len(torch_alone) > 1 else fastest
    provision = next((r for r in runs if r.name == "provision apply"), None)  # the first installer named
    serial = next((r for r in runs if r.name == "serial script"), None)
    lines = [
        f"Bandwidth {args.bandwidth / 1e6:g} MB/s (one link shared by every transfer), model bytes scaled by "
        f"{args.model_scale:g}; load average {load_at_start:.1f} at the start.", "",
        f"Lower bound: {total / 1e9:.2f} GB / {args.bandwidth / 1e6:g} MB/s = {transfer:.1f} s "
        f"(models {model_bytes / 1e9:.2f} GB, wheels and sdists {archive_bytes / 1e9:.2f} GB) "
        f"+ {torch_seconds:.1f} s installing torch and its CUDA wheels alone ({how}) "
        f"= **{bound:.1f} s**.", "",
        "| tool | wall (s) | ComfyUI answers | bytes served | vs lower bound | load average (start, end) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        wall = f"{run.seconds:.1f}" if run.seconds is not None else "-"
        ratio = f"{run.seconds / bound:.2f}x" if run.seconds else "-"
        lines.append(f"| {run.name} | {wall} | {'yes' if run.ok else 'no'} | {run.served / 1e9:.2f} GB | "
                     f"{ratio} | {run.load[0]:.1f}, {run.load[1]:.1f} | {run.note} |")
    if provision and serial and provision.ok and serial.ok and provision.seconds and serial.seconds:
        lines += ["", f"Serial script / provision: **{serial.seconds / provision.seconds:.2f}x**; "
                      f"provision / lower bound: **{provision.seconds / bound:.2f}x**."]
    lines += ["", "Steps (wall seconds):", ""]
    for run in runs:
        lines.append(f"- {run.name}: " + ", ".join(f"`{name}` {secs:.1f}" for name, secs in run.steps))
    lines += ["", f"Machine: {machine()}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bandwidth", type=parse_rate, default=parse_rate("200MB/s"))
    parser.add_argument("--model-scale", type=float, default=0.1,
                        help="model file sizes times this (the lower bound's model bytes scale with it)")
    parser.add_argument("--only", default="provision,serial,comfy-cli")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "PROVISION_BENCH_CACHE", Path.home() / ".cache" / "provision-bench" / "cold")))
    parser.add_argument("--comfyui-snapshot", type=Path, default=Path(os.environ.get(
        "PROVISION_BENCH_COMFYUI_SNAPSHOT", "/work/.mirror/Comfy-Org+ComfyUI/repo")))
    parser.add_argument("--plugin-snapshot", type=Path, default=Path(os.environ.get(
        "PROVISION_BENCH_PLUGIN_SNAPSHOT", "/work/.mirror/nunchaku-ai+ComfyUI-nunchaku/repo")))
    parser.add_argument("--python", default="/usr/bin/python3.11", help="the host's Python (the venvs' base)")
    parser.add_argument("--torch-alone-seconds", type=float,
                        help="reuse this measured torch install time instead of measuring it again")
    parser.add_argument("--installer", default="uv",
                        help="provision's python.installer, uv or pip; a list (uv,pip) runs provision once with each "
                             "(uv is installed from the index, as on a fresh box)")
    parser.add_argument("--work", type=Path, help="keep the runs' directories here (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, help="also write the results (markdown) here")
    args = parser.parse_args()
    tools = set(args.only.split(","))
    if not set(args.installer.split(",")) <= {"uv", "pip"}:
        parser.error(f"--installer {args.installer!r}: name uv, pip or both (uv,pip)")
    load_at_start = os.getloadavg()[0]

    args.cache.mkdir(parents=True, exist_ok=True)
    git = build_mirrors(args.cache, args.comfyui_snapshot, args.plugin_snapshot)
    wheels = fill_index(args.cache, args.comfyui_snapshot, args.plugin_snapshot, args.python)
    tool_venv = comfy_cli_venv(args.cache, args.python) if "comfy-cli" in tools else None
    work = args.work or Path(tempfile.mkdtemp(prefix="provision-cold-"))
    work.mkdir(parents=True, exist_ok=True)
    probe_env = clean_env(work / "resolve-home", {})
    models = resolved_models(overlay(work, work / "unused", 8188), probe_env)
    model_dir, hub = build_hub(args.cache, models, args.model_scale)
    up = Upstreams(wheels, model_dir, [m.hub for m in hub], Throttle(args.bandwidth))
    runs: list[Run] = []
    try:
        torch_alone = ({"--torch-alone-seconds": args.torch_alone_seconds} if args.torch_alone_seconds
                       else torch_install_seconds(work, wheels, args.python))
        with serve(up) as base:
            mirrors = work / "provision.mirrors.yaml"
            mirrors.write_text(yaml.safe_dump({"mirrors": [
                {"prefix": "https://github.com/", "replace": f"file://{git}/"},
                {"prefix": "https://download.pytorch.org/whl/cu130", "replace": f"{base}/simple"},
                {"prefix": "https://pypi.org/simple", "replace": f"{base}/simple"},
            ], "huggingface": {"endpoint": f"{base}/hf"}}, sort_keys=False))
            if "provision" in tools:
                for installer in args.installer.split(","):
                    runs.append(with_load(lambda choice=installer: run_provision(work, up, hub, mirrors, {}, choice)))
                archive_bytes = sum(up.archives.values())
            if "serial" in tools:
                runs.append(with_load(lambda: run_serial(work, up, base, git, hub, args.python, {})))
            if "comfy-cli" in tools and tool_venv is not None:
                runs.append(with_load(lambda: run_comfy_cli(work, up, base, git, hub, tool_venv, {})))
            if "provision" not in tools:
                archive_bytes = sum(up.archives.values())
        text = report(args, runs, hub, archive_bytes, torch_alone, load_at_start)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
