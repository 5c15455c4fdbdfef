"""Drift check of a host holding large model files: `plan` through the stat cache, and `plan --deep`.

Part 1: a root holding --sparse-gb of sparse model files (zero bytes; no disk used), listed in a manifest as
`download` resources with their sha256, the stat cache seeded the way a first apply leaves it. `plan` must
find no drift without reading them (median of --runs).

Part 2: real files (--deep-gb of random bytes, on disk) in a second root: `plan --deep` re-hashes every file,
timed against `sha256sum` over the same files, in turns (both read warm from the page cache after the first
pass unless the files exceed memory, so both measure sha256 speed rather than the disk's).

    .venv/bin/python bench/plan_large.py --dir /var/tmp/provision-plan-large [--sparse-gb 100] [--deep-gb 6]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PROVISION

GB = 10**9
PIECE = 1 << 24


def zeros_sha256(size: int) -> str:
    hasher = hashlib.sha256()
    zero = bytes(PIECE)
    left = size
    while left:
        take = min(left, PIECE)
        hasher.update(zero if take == PIECE else bytes(take))
        left -= take
    return hasher.hexdigest()


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while piece := source.read(PIECE):
            hasher.update(piece)
    return hasher.hexdigest()


def write_root(root: Path, files: list[tuple[str, int, str]]) -> Path:
    """A manifest of `download` resources for files already in place, and the stat cache a first apply writes."""
    manifest = root.parent / f"{root.name}.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": root.name,
        "target": {"connection": "local", "root": str(root)},
        "resources": [{"kind": "download", "path": rel, "url": f"https://huggingface.co/bench/large/resolve/main/{rel}",
                       "sha256": sha, "size": size} for rel, size, sha in files],
    }, sort_keys=False))
    state = root / ".provision"
    state.mkdir(mode=0o700, exist_ok=True)
    entries = {}
    for rel, _size, sha in files:
        path = os.path.normpath(os.path.join(root, rel))
        st = os.stat(path)
        entries[path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "sha256": sha}
    cache = state / "statcache.json"
    cache.write_text(json.dumps(entries, sort_keys=True))
    cache.chmod(0o600)
    return manifest


CPU_SECONDS: dict[str, list[float]] = {}


def timed(argv: list[str], expect: int, label: str = "") -> float:
    """Wall seconds; the CPU seconds (user + system) go to CPU_SECONDS[label], which the machine's load
    does not inflate the way it does wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS.setdefault(label, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, expected {expect}:\n{done.stdout[-2000:]}"
                         f"\n{done.stderr[-2000:]}")
    return elapsed


def sparse_part(base: Path, total_gb: float, count: int, runs: int) -> tuple[list[float], list[float], int]:
    root = base / "sparse"
    size = int(total_gb * GB / count)
    (root / "models").mkdir(parents=True, exist_ok=True)
    sha = zeros_sha256(size)  # every file holds the same zeros
    files = []
    for index in range(count):
        rel = f"models/diffusion_models/large-{index:02d}.safetensors"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            out.truncate(size)
        files.append((rel, size, sha))
    manifest = write_root(root, files)
    baseline = [timed([str(PROVISION), "--version"], 0, "version") for _ in range(runs)]
    times = [timed([str(PROVISION), "plan", str(manifest)], 0, "plan") for _ in range(runs)]
    return times, baseline, size * count


def deep_part(base: Path, total_gb: float, count: int, runs: int) -> tuple[list[float], list[float], int]:
    root = base / "deep"
    size = int(total_gb * GB / count)
    files = []
    for index in range(count):
        rel = f"models/diffusion_models/real-{index:02d}.safetensors"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size != size:
            with path.open("wb") as out:
                for _ in range(size // PIECE):
                    out.write(os.urandom(PIECE))
                out.write(os.urandom(size % PIECE))
        files.append((rel, size, file_sha256(path)))
    manifest = write_root(root, files)
    paths = [str(root / rel) for rel, _, _ in files]
    deep, reference = [], []
    for _ in range(runs):
        deep.append(timed([str(PROVISION), "plan", "--deep", str(manifest)], 0))
        reference.append(timed(["sha256sum", *paths], 0))
    return deep, reference, size * count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/provision-plan-large"))
    parser.add_argument("--sparse-gb", type=float, default=100)
    parser.add_argument("--sparse-files", type=int, default=10)
    parser.add_argument("--deep-gb", type=float, default=6)
    parser.add_argument("--deep-files", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="sparse,deep")
    parser.add_argument("--keep", action="store_true", help="keep --dir (the deep part's files are reused)")
    parser.add_argument("--out", type=Path, help="also write the results (markdown) here")
    args = parser.parse_args()
    lines = []
    try:
        if "sparse" in args.only:
            times, baseline, total = sparse_part(args.dir, args.sparse_gb, args.sparse_files, args.runs)
            cpu, cpu_version = statistics.median(CPU_SECONDS["plan"]), statistics.median(CPU_SECONDS["version"])
            lines.append(f"| `provision plan` (stat cache), {args.sparse_files} files, {total / GB:.0f} GB sparse | "
                         f"wall {statistics.median(times):.2f} s median of {len(times)} (min {min(times):.2f}, "
                         f"max {max(times):.2f}); CPU {cpu:.2f} s | exit 0, no drift; `provision --version` alone: "
                         f"wall {statistics.median(baseline):.2f} s, CPU {cpu_version:.2f} s |")
        if "deep" in args.only:
            deep, reference, total = deep_part(args.dir, args.deep_gb, args.deep_files, args.runs)
            ratio = statistics.median(deep) / statistics.median(reference)
            lines.append(f"| `provision plan --deep`, {args.deep_files} files, {total / GB:.1f} GB on disk | "
                         f"{statistics.median(deep):.2f} s median of {len(deep)} "
                         f"({total / GB / statistics.median(deep):.2f} GB/s) | "
                         f"`sha256sum` {statistics.median(reference):.2f} s "
                         f"({total / GB / statistics.median(reference):.2f} GB/s): {ratio:.2f}x |")
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    load = os.getloadavg()
    text = ("| check | time | compared with |\n|---|---|---|\n" + "\n".join(lines) +
            f"\n\nLoad average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end.\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
