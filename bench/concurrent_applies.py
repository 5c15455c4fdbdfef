"""Two `provision apply` runs started at the same moment on one root, N times, with two manifests that
put a different letter in three places (the middle one after a 2 s step): how each pair ends.

Run from the repository root: `.venv/bin/python bench/concurrent_applies.py --pairs 15`. To measure
another tree (an older commit, say), put it first on PYTHONPATH and run from inside it: the applies
are `python -m provisioner` subprocesses and import whatever tree that finds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from tests.support.concurrent_runs import Finished, Run, run, two_state_manifest
from tests.support.hosts import TargetHost


def _converged(done: Finished) -> bool:
    return done.returncode == 0 and bool(done.json().get("ok"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="provision-concurrent-"))
    host = TargetHost("local", "local", str(directory / "root"))
    manifests = {letter: two_state_manifest(directory, host, letter, slow_seconds=2) for letter in "AB"}
    tally = {"pairs": args.pairs, "serialized (both converged)": 0, "runs refused naming the holder": 0,
             "runs failed otherwise": 0, "pairs ending matching neither manifest": 0,
             "pairs reporting converged while matching neither": 0}
    for index in range(args.pairs):
        order = "AB" if index % 2 == 0 else "BA"
        pair = [r.finish() for r in [Run("apply", "--json", str(manifests[letter])) for letter in order]]
        for done in pair:
            if done.returncode != 0:
                key = "runs refused naming the holder" if "is locked by" in done.stderr else "runs failed otherwise"
                tally[key] += 1
        converged = [done for done in pair if _converged(done)]
        tally["serialized (both converged)"] += len(converged) == 2
        if not any(run("plan", str(path)).returncode == 0 for path in manifests.values()):
            tally["pairs ending matching neither manifest"] += 1
            tally["pairs reporting converged while matching neither"] += bool(converged)
    print(json.dumps(tally, indent=2))


if __name__ == "__main__":
    main()
