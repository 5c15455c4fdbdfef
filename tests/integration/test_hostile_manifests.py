"""Manifests from a stranger's pull request: a seeded corpus mutated from the shipped manifests, and special files.

Every case must end in a clear answer: exit 0 (valid) or 1 with file:line, never a traceback, a hang, a
memory blow-up or exit 2 (which means drift). Reproduce the figures with
`pytest -s tests/integration/test_hostile_manifests.py` (they are printed); replay one case with
`python -m tests.support.hostile_runner SEED COUNT DIR` and look for its name.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.bounded import run_bounded
from tests.support.hostile_manifests import generate

SEED = 20261202
#: PROVISION_HOSTILE_CASES=1300 runs a larger corpus by hand; CI keeps 300.
CASES = int(os.environ.get("PROVISION_HOSTILE_CASES", "300"))
PROVISION = [sys.executable, "-m", "provisioner"]
REPO = Path(__file__).resolve().parents[2]
#: The whole corpus runs in one process under the memory cap; a stuck case is caught by its own 10 s timer.
#: Generous (a loaded machine runs 3-4x slower); the tests using it get a pytest timeout above it, so that the
#: bounded run, not pytest's default 300 s, is what ends a slow corpus, with its figures.
CORPUS_SECONDS = max(600, 2 * CASES)
CORPUS_TEST_TIMEOUT = CORPUS_SECONDS + 120
#: One CLI run on hostile input: start-up (~0.5 s) plus a bounded parse; far below this when it is bounded.
RUN_SECONDS = 30


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def _located(output: str, files: list[str]) -> bool:
    """The error names one of the case's files with a line number."""
    return any(re.search(re.escape(name) + r":\d+", output) for name in files)


def _host_refusal(output: str) -> bool:
    """A preflight refusal whose every problem is about the host's facts (a driver too old), not the file."""
    return "preflight refused the manifest" in output and re.findall(r"^\s+\d+\. \[(.*?)\]", output, re.M) == [
        "host"] * len(re.findall(r"^\s+\d+\. \[", output, re.M))


def _figures(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    failures: dict[str, list[str]] = {"tracebacks": [], "hangs": [], "bad exit codes": [],
                                      "rejections without file:line": [], "host refusals": []}
    for record in records:
        for step, outcome in record["steps"].items():
            label = f"{record['case']} {step} ({record['mutation'][:90]}): {outcome['output'][-600:]}"
            if outcome["exit"] == "traceback":
                failures["tracebacks"].append(label)
            elif outcome["exit"] == "hang" or outcome["seconds"] > 10:
                failures["hangs"].append(label)
            elif outcome["exit"] not in (0, 1) or "Traceback" in outcome["output"]:
                failures["bad exit codes"].append(label)
            elif outcome["exit"] == 1 and _host_refusal(outcome["output"]):
                failures["host refusals"].append(label)
            elif outcome["exit"] == 1 and not _located(outcome["output"], record["files"]):
                failures["rejections without file:line"].append(label)
    return failures


@pytest.mark.timeout(CORPUS_TEST_TIMEOUT)
def test_mutated_manifests_are_refused_clearly_and_quickly(tmp_path: Path) -> None:
    done = run_bounded([sys.executable, "-m", "tests.support.hostile_runner", str(SEED), str(CASES), str(tmp_path)],
                       CORPUS_SECONDS, cwd=REPO, env=_env())
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert not done.hung, f"the corpus stopped after {len(records)} cases; the next one hangs"
    assert done.returncode == 0 and len(records) == CASES, done.stderr[-3000:]
    failures = _figures(records)
    rejected = sum(1 for r in records if r["steps"]["validate"]["exit"] == 1)
    print(f"\n{CASES} mutated manifests (seed {SEED}), validate + plan each: {len(failures['tracebacks'])} tracebacks, "
          f"{len(failures['hangs'])} hangs, {len(failures['bad exit codes'])} bad exit codes, "
          f"{len(failures['rejections without file:line'])} rejections without file:line; {rejected} rejected "
          f"by validate, {len(failures['host refusals'])} plans refused for the host's facts, "
          f"slowest step {max(o['seconds'] for r in records for o in r['steps'].values())} s, "
          f"{done.seconds} s in all")
    for kind in ("tracebacks", "hangs", "bad exit codes", "rejections without file:line"):
        assert not failures[kind], f"{kind}:\n" + "\n\n".join(failures[kind][:5])
    # The corpus must exercise both outcomes, or it tests nothing.
    assert 0 < rejected < CASES


@pytest.mark.timeout(CORPUS_TEST_TIMEOUT)
def test_mutated_fleet_inventories_are_refused_clearly(tmp_path: Path) -> None:
    count = 120
    done = run_bounded([sys.executable, "-m", "tests.support.hostile_runner", str(SEED), str(count), str(tmp_path),
                        "inventories"], CORPUS_SECONDS, cwd=REPO, env=_env())
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert not done.hung and done.returncode == 0 and len(records) == count, done.stderr[-3000:]
    failures = _figures(records)
    rejected = sum(1 for r in records if r["steps"]["inventory"]["exit"] == 1)
    print(f"\n{count} mutated fleet inventories: {len(failures['tracebacks'])} tracebacks, {len(failures['hangs'])} "
          f"hangs, {len(failures['rejections without file:line'])} rejections without file:line; {rejected} rejected")
    for kind in ("tracebacks", "hangs", "bad exit codes", "rejections without file:line"):
        assert not failures[kind], f"{kind}:\n" + "\n\n".join(failures[kind][:5])
    assert 0 < rejected < count


def test_real_cli_on_a_sample_of_the_corpus(tmp_path: Path) -> None:
    """The same cases through the real `provision` executable, each under the memory cap and a time limit;
    `plan` runs for real against a local root for the cases made from local.yaml."""
    cases = generate(SEED, CASES)
    sample = [c for c in cases if c.entry == "local.yaml"][:5] + [c for c in cases if c.entry != "local.yaml"][:5]
    for case in sample:
        directory = tmp_path / case.name
        path = case.write(directory)
        files = [str(directory / name) for name in case.files]
        commands = [["validate", str(path)], ["resolve", str(path), "--facts",
                                                str(REPO / "tests" / "unit" / "facts" / case.facts)]]
        if case.entry == "local.yaml":
            commands.append(["plan", str(path)])
        for command in commands:
            done = run_bounded([*PROVISION, *command], RUN_SECONDS, cwd=directory, env=_env())
            what = f"{case.name} {command[0]} ({case.mutation[:100]}): {done.stderr[-1500:]}"
            assert not done.hung, what
            assert "Traceback" not in done.stderr, what
            if command[0] == "plan" and done.returncode == 2:
                assert "error:" not in done.stderr, what  # 2 is drift, shown as a plan, never a rejection
                continue
            assert done.returncode in (0, 1), what
            if done.returncode == 1 and done.stderr.startswith("error:") and "preflight refused" not in done.stderr \
                    and "Cannot resolve" not in done.stdout:
                assert _located(done.stderr, files), what


def _special_files(tmp_path: Path) -> list[tuple[str, Path]]:
    """(what the error must say, a path) for each kind of file that is not a regular one."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    loop_a, loop_b = tmp_path / "loop-a.yaml", tmp_path / "loop-b.yaml"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    directory = tmp_path / "folder.yaml"
    directory.mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "sock.yaml"))
    listener.close()
    dangling = tmp_path / "dangling.yaml"
    dangling.symlink_to(tmp_path / "nowhere.yaml")
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    return [("a named pipe (FIFO)", fifo), ("is a device", Path("/dev/zero")), ("symbolic link loop", loop_a),
            ("is a directory", directory), ("is a socket", tmp_path / "sock.yaml"),
            ("which does not exist", dangling), ("is a device", zero)]


@pytest.mark.parametrize(("command", "kinds"), [("validate", 7), ("plan", 3), ("resolve", 3),
                                                ("lock --no-download", 3), ("check", 3), ("fleet plan", 3)])
def test_special_files_are_refused_at_once_with_exit_1(tmp_path: Path, command: str, kinds: int) -> None:
    """A FIFO would block the reader forever and /dev/zero would fill its memory: both are refused by type."""
    for reason, path in _special_files(tmp_path)[:kinds]:
        done = run_bounded([*PROVISION, *command.split(), str(path)], RUN_SECONDS, cwd=tmp_path, env=_env())
        what = f"{command} {path}: {done.returncode} {done.stderr[-800:]}"
        assert not done.hung and done.seconds < 15, what
        assert done.returncode == 1 and "Traceback" not in done.stderr, what
        assert str(path) in done.stderr and reason in done.stderr, what


def test_special_files_named_inside_a_manifest_are_refused(tmp_path: Path) -> None:
    """The same checks for the files a manifest names: a base it extends, a template, the facts file."""
    specials = _special_files(tmp_path)
    for reason, special in specials:
        link = tmp_path / "base.yaml"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(special)
        manifest = tmp_path / "m.yaml"
        manifest.write_text("extends: base.yaml\nname: m\n")
        done = run_bounded([*PROVISION, "validate", str(manifest)], RUN_SECONDS, env=_env())
        what = f"{reason}: {done.stderr[-800:]}"
        assert done.returncode == 1 and not done.hung and "Traceback" not in done.stderr, what
        assert f"{manifest}:1:1: extends: base manifest 'base.yaml'" in done.stderr and reason in done.stderr, what
    (tmp_path / "templates").mkdir()
    os.mkfifo(tmp_path / "templates" / "t.j2")
    manifest = tmp_path / "t.yaml"
    manifest.write_text(yaml.safe_dump({"name": "t", "resources": [{"kind": "file", "path": "f", "template": "t.j2"}]}))
    done = run_bounded([*PROVISION, "validate", str(manifest)], RUN_SECONDS, env=_env())
    assert done.returncode == 1 and not done.hung, done.stderr
    assert f"{manifest}:5:3: resources[0].template" in done.stderr and "FIFO" in done.stderr
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\n")
    done = run_bounded([*PROVISION, "resolve", str(plain), "--facts", str(specials[0][1])],
                       RUN_SECONDS, env=_env())
    assert done.returncode == 1 and not done.hung and "named pipe (FIFO)" in done.stderr, done.stderr
