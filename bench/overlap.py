"""A cold apply of one stand-in stack, one step at a time (`--parallel 1`) and with independent steps at once.

The stack: a venv; a torch stand-in wheel (--torch-mb of random data, so pip really unpacks and hashes it)
from a local package index; a ComfyUI stand-in checkout (--files files) with a requirements.txt of five
small packages from that index; two plugins cloned inside it; --models model files from the Hub stand-in,
which sends them over one shared link throttled to --mbps. Each run starts from an empty root.

Run from the repository root: `.venv/bin/python bench/overlap.py --runs 3`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from tests.support.fake_hub import HubState, serve_hub
from tests.support.gitrepos import make_upstream
from tests.support.hosts import TargetHost, write_manifest
from tests.support.servers import serve_directory
from tests.support.wheels import build_wheel, write_simple_index

PROVISION = [sys.executable, "-m", "provisioner"]
REQUIREMENTS = ["provaiohttp", "provpillow", "provsafetensors", "provtqdm", "provyaml"]


def _index(directory: Path, torch_mb: int) -> Path:
    house = directory / "wheels"
    build_wheel(house, "provtorch", "2.10.0", extra_files={"provtorch/lib.bin": os.urandom(torch_mb << 20)})
    for name in REQUIREMENTS:
        build_wheel(house, name, "1.0.0", extra_files={f"{name}/data.bin": os.urandom(1 << 20)})
    root = directory / "index"
    write_simple_index(house, root)
    return root


def _stack(directory: Path, files: int) -> dict[str, str]:
    comfy = make_upstream(directory / "upstream", "ComfyUI")
    tree = {f"comfy/module_{i}.py": f"VALUE = {i}\n" * 20 for i in range(files)}
    tree["requirements.txt"] = "".join(f"{name}==1.0.0\n" for name in REQUIREMENTS)
    tree[".gitignore"] = "/custom_nodes/\n"  # as ComfyUI's: plugins are cloned in there
    comfy.commit(tree, "ComfyUI", tag="v0.3.0")
    urls = {"ComfyUI": comfy.url}
    for plugin in ("ComfyUI-nunchaku", "ComfyUI-Manager"):
        repo = make_upstream(directory / "upstream", plugin)
        repo.commit({f"nodes_{i}.py": "pass\n" for i in range(files // 10)}, plugin, tag="v1.0.0")
        urls[plugin] = repo.url
    return urls


def _manifest(directory: Path, host: TargetHost, index: str, repos: dict[str, str], endpoint: str,
              models: dict[str, tuple[str, int]]) -> Path:
    resources: list[dict[str, object]] = [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": ["provtorch==2.10.0"], "index_url": index},
        {"kind": "git", "path": "ComfyUI", "repo": repos["ComfyUI"], "ref": "v0.3.0"},
        {"kind": "requirements", "venv": "venv", "file": "ComfyUI/requirements.txt", "index_url": index},
    ]
    for plugin in ("ComfyUI-nunchaku", "ComfyUI-Manager"):
        resources.append({"kind": "git", "path": f"ComfyUI/custom_nodes/{plugin}", "repo": repos[plugin],
                          "ref": "v1.0.0"})
    for name, (sha, size) in models.items():
        resources.append({"kind": "download", "path": f"models/{name}", "sha256": sha, "size": size,
                          "url": f"{endpoint}/org/models/resolve/main/{name}"})
    return write_manifest(directory, host, {"resources": resources})


def _apply(manifest: Path, root: Path, parallel: int) -> tuple[float, dict[str, object]]:
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    done = subprocess.run([*PROVISION, "apply", "--json", "--parallel", str(parallel), str(manifest)],
                          capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    report = json.loads(done.stdout)
    if done.returncode != 0 or not report.get("ok"):
        raise SystemExit(f"apply --parallel {parallel} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--model-mb", type=int, default=40)
    parser.add_argument("--mbps", type=float, default=2.0, help="The Hub link, MB/s shared by all downloads.")
    parser.add_argument("--torch-mb", type=int, default=60)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--parallel", type=int, default=6, help="The overlapped run's --parallel.")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="provision-overlap-"))
    hub = HubState(bytes_per_second=args.mbps * 1e6, shared_link=True)
    models = {}
    for i in range(args.models):
        size = args.model_mb << 20
        models[f"model_{i}.safetensors"] = (hub.add("org/models", f"model_{i}.safetensors", os.urandom(size)), size)
    repos = _stack(directory, args.files)
    host = TargetHost("local", "local", str(directory / "root"))
    times: dict[int, list[float]] = {1: [], args.parallel: []}
    steps: dict[int, dict[str, float]] = {}
    with serve_directory(_index(directory, args.torch_mb)) as base, serve_hub(hub) as endpoint:
        manifest = _manifest(directory, host, f"{base}/simple", repos, endpoint, models)
        for _ in range(args.runs):
            for parallel in times:  # alternated, so drift in the machine's load hits both alike
                seconds, report = _apply(manifest, Path(host.root), parallel)
                times[parallel].append(round(seconds, 2))
                steps[parallel] = {r["id"]: r["seconds"] for r in report["resources"] if "seconds" in r}
    download_bytes = sum(size for _, size in models.values())
    link_seconds = download_bytes / (args.mbps * 1e6)
    result = {
        "runs": args.runs, "models": f"{args.models} x {args.model_mb} MiB", "link_MBps": args.mbps,
        "torch_wheel_MiB": args.torch_mb, "checkout_files": args.files,
        "wall_seconds": {f"--parallel {p}": t for p, t in times.items()},
        "median_seconds": {f"--parallel {p}": statistics.median(t) for p, t in times.items()},
        "downloads_alone_on_the_link_seconds": round(link_seconds, 2),
        "steps_seconds_last_run": {f"--parallel {p}": s for p, s in steps.items()},
    }
    serial, overlapped = statistics.median(times[1]), statistics.median(times[args.parallel])
    result["speedup"] = round(serial / overlapped, 2)
    print(json.dumps(result, indent=2))
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
