"""One writer per root: two real `provision` processes on one root are serialized or refused, never
interleaved; generations stay unique and consecutive; a killed holder frees the root at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.concurrent_runs import (
    Finished,
    Run,
    generation_files,
    lock_holder,
    run,
    two_state_manifest,
    wait_for_holder,
)
from tests.support.hosts import TargetHost

#: Pairs of simultaneous applies per test; each costs about two slow steps (~3 s here).
PAIRS = int(os.environ.get("PROVISION_LOCK_PAIRS", "5"))
REFUSAL = re.compile(r"root (?P<root>\S+) is locked by (?P<command>apply|rollback) pid (?P<pid>\d+) "
                     r"\(user (?P<user>[^,]+), controller (?P<chost>[^/]+)/(?P<cuser>[^ ]+) pid (?P<cpid>\d+)\) "
                     r"since \d\d:\d\d:\d\d UTC .*use --lock-timeout")


def _dead(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (the agent's parent, the controller, was killed with it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _matching(manifests: dict[str, Path]) -> list[str]:
    """The manifests the host matches now (plan exits 0), each plan also a reader racing nothing."""
    found = []
    for name, path in manifests.items():
        done = run("plan", str(path))
        assert done.returncode in (0, 2), done.stderr
        if done.returncode == 0:
            found.append(name)
    return found


def _assert_pair(pair: list[Finished], other: dict[int, int]) -> list[Finished]:
    """Each run either converged (its report says ok) or was refused naming the other run as holder."""
    succeeded = []
    for done in pair:
        assert "Traceback" not in done.stderr, done.stderr
        if done.returncode == 0:
            assert done.json()["ok"] is True, done.stdout
            succeeded.append(done)
            continue
        assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
        refusal = REFUSAL.search(done.stderr)
        assert refusal, f"exit 1 without naming the lock holder:\n{done.stderr}"
        assert int(refusal["cpid"]) == other[done.pid], "the refusal names the other run's controller"
        assert refusal["command"] == "apply"
    assert succeeded, "at least one run of a pair gets the root"
    return succeeded


def _concurrent_pairs(tmp_path: Path, host: TargetHost, pairs: int) -> dict[str, int]:
    """Run `pairs` pairs of simultaneous applies of two manifests; how each pair ended, counted."""
    tally = {"pairs": pairs, "refused": 0, "serialized": 0}
    manifests = {letter: two_state_manifest(tmp_path, host, letter, slow_seconds=2) for letter in "AB"}
    generations: list[int] = []
    for index in range(pairs):
        # Odd pairs wait for each other (serialized), even ones take the default: refuse at once.
        wait = ["--lock-timeout", "2m"] if index % 2 else []
        first, second = ("A", "B") if index % 2 == 0 else ("B", "A")
        runs = [Run("apply", "--json", *wait, str(manifests[first])),
                Run("apply", "--json", *wait, str(manifests[second]))]
        pair = [r.finish() for r in runs]
        succeeded = _assert_pair(pair, {pair[0].pid: pair[1].pid, pair[1].pid: pair[0].pid})
        tally["serialized" if len(succeeded) == 2 else "refused"] += 1
        if wait:
            assert len(succeeded) == 2, "with --lock-timeout both runs of a pair get the root, one after the other"
        last = max(succeeded, key=lambda d: d.json()["generation"] or 0)
        assert _matching(manifests) == [last.json()["manifest"][-1].upper()], \
            "the host matches exactly the manifest of the last run that reported it converged"
        generations += [d.json()["generation"] for d in succeeded if d.json()["generation"] is not None]
    assert sorted(generations) == list(range(1, len(generations) + 1)), generations
    files = generation_files(host.root)
    assert sorted(files) == sorted(generations), "one generation file per converged run, no gaps, no overwrite"
    assert all(record["generation"] == number and record["status"] == "ok" for number, record in files.items())
    assert lock_holder(host.root) is None, "the lock is released (and says so) after the last run"
    tally["generations"] = len(generations)
    return tally


def test_concurrent_applies_on_one_root_are_serialized_or_refused(tmp_path: Path) -> None:
    tally = _concurrent_pairs(tmp_path, TargetHost("local", "local", str(tmp_path / "root")), PAIRS)
    print(f"local: {tally}")  # the figures for the table (pytest -s)


@pytest.mark.ssh
def test_concurrent_applies_over_ssh_are_serialized_or_refused(request: pytest.FixtureRequest,
                                                                tmp_path: Path) -> None:
    from tests.support.sshd import ssh_target_host

    tally = _concurrent_pairs(tmp_path, ssh_target_host(request, tmp_path), 2)
    print(f"ssh: {tally}")


def test_a_held_root_refuses_at_once_naming_the_holder_and_waits_with_a_timeout(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    # The holder holds the root until the test opens the gate (90 s at most), not for a fixed time that
    # a loaded machine's slower runs below could outlast.
    gate = tmp_path / "release-the-holder"
    slow = two_state_manifest(tmp_path, host, "A", slow_seconds=90, gate=gate)
    other = two_state_manifest(tmp_path, host, "B", slow_seconds=0)
    holder_run = Run("apply", str(slow))
    waiting: Run | None = None
    try:
        holder = wait_for_holder(host.root, holder_run)
        started = time.monotonic()
        refused = run("apply", str(other))
        refused_after = time.monotonic() - started
        assert refused.returncode == 1
        match = REFUSAL.search(refused.stderr)
        assert match, refused.stderr
        assert (int(match["pid"]), match["user"], int(match["cpid"])) == (holder["pid"], holder["user"], holder_run.pid)
        assert match["root"] == host.root
        assert refused_after < 45, f"refused after {refused_after:.1f}s, not at once"
        # Reads do not take the lock, and an apply in progress does not break them.
        plan = run("plan", str(other))
        assert plan.returncode == 2 and "Traceback" not in plan.stderr, plan.stderr

        too_short = run("apply", "--lock-timeout", "500ms", str(other))
        assert too_short.returncode == 1 and "after waiting 0.5s" in too_short.stderr, too_short.stderr
        # Under --json too (stdout is the report), it says on stderr whom it waits for.
        waiting = Run("apply", "--json", "--lock-timeout", "1m", str(other))
        waiting.wait_for_stderr(f"is locked by apply pid {holder['pid']}")
        assert "waiting up to 60s" in waiting.stderr_so_far()
        gate.touch()
        first = holder_run.finish()
        assert first.returncode == 0, first.stdout + first.stderr
        waited = waiting.finish()
        assert waited.returncode == 0 and waited.json()["ok"] is True, waited.stdout + waited.stderr
    finally:
        holder_run.kill()
        if waiting is not None:
            waiting.kill()
    assert run("plan", str(other)).returncode == 0, "the run that waited applied after the holder finished"
    assert sorted(generation_files(host.root)) == [1, 2]

    bad = run("apply", "--lock-timeout", "soon", str(other))
    assert bad.returncode == 1 and "'soon' is not a duration" in bad.stderr  # a usage error: 2 means drift


def test_rollback_and_apply_on_one_root_do_not_interleave(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    a = two_state_manifest(tmp_path, host, "A", slow_seconds=0)
    b = two_state_manifest(tmp_path, host, "B", slow_seconds=0)
    assert run("apply", str(a)).returncode == 0
    assert run("apply", str(b)).returncode == 0
    gate = tmp_path / "release-the-apply"
    slow_a = two_state_manifest(tmp_path, host, "A", slow_seconds=90, filename="slow-a.yaml", gate=gate)
    applying = Run("apply", "--json", str(slow_a))
    rolling: Run | None = None
    try:
        holder = wait_for_holder(host.root, applying)
        refused = run("rollback", "--to", "2", str(b))
        assert refused.returncode == 1
        match = REFUSAL.search(refused.stderr)
        assert match and match["command"] == "apply" and int(match["cpid"]) == applying.pid, refused.stderr
        # Without --json, so that it tells (on stderr) that it is waiting, and for whom.
        rolling = Run("rollback", "--to", "2", "--lock-timeout", "1m", str(b))
        rolling.wait_for_stderr(f"is locked by apply pid {holder['pid']}")
        gate.touch()
        applied = applying.finish()
        rolled = rolling.finish()
    finally:
        applying.kill()
        if rolling is not None:
            rolling.kill()
    assert applied.returncode == 0 and applied.json()["generation"] == 3, applied.stdout + applied.stderr
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "Rolled back to generation 2." in rolled.stdout, rolled.stdout
    assert run("plan", str(b)).returncode == 0 and run("plan", str(a)).returncode == 2
    records = generation_files(host.root)
    assert sorted(records) == [1, 2, 3, 4]
    assert records[4]["manifest"]["rollback_to"] == 2, "the rollback ran after the apply, as generation 4"
    assert [records[n]["manifest"]["name"] for n in (1, 2, 3, 4)] == ["state-a", "state-b", "state-a", "state-b"]


def test_a_killed_holder_frees_the_root_at_once(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    slow = two_state_manifest(tmp_path, host, "A", slow_seconds=30)
    other = two_state_manifest(tmp_path, host, "B", slow_seconds=0)
    holder_run = Run("apply", str(slow))
    try:
        holder = wait_for_holder(host.root, holder_run)
        holder_run.signal_group(signal.SIGKILL)  # the controller, the agent and its `sleep 30`
        holder_run.process.wait(timeout=10)
        killed = time.monotonic()
        after = run("apply", str(other))  # --lock-timeout 0: it must not find the lock held
        took = time.monotonic() - killed
    finally:
        holder_run.kill()
    assert after.returncode == 0, after.stdout + after.stderr
    # The proof the lock was free: with --lock-timeout 0 a held lock is refused at once, naming its holder.
    assert "is locked by" not in after.stderr, after.stderr
    # Generous (a loaded machine runs 3-4x slower): only a gross wait, like a stale lock's expiry, exceeds it.
    assert took < 60, f"the next apply waited {took:.1f}s"
    assert _dead(holder["pid"]), "the lock was free because its holder (the agent) died, not because it ended"
    assert run("plan", str(other)).returncode == 0


def test_a_planted_link_at_the_lock_file_is_refused_not_followed(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    manifest = two_state_manifest(tmp_path, host, "A", slow_seconds=0)
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    state = Path(host.root, ".provision")
    state.mkdir(parents=True)
    (state / "root.lock").symlink_to(outside)
    done = run("apply", str(manifest))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "root.lock" in done.stderr and "symbolic link" in done.stderr, done.stderr
    assert outside.read_text() == "precious\n"
    assert not Path(host.root, "one.txt").exists(), "nothing is applied without the lock"


def test_generation_numbers_from_writers_racing_without_the_lock_never_collide(tmp_path: Path) -> None:
    """The second guard: a writer that does not hold the lock (an older agent) takes the next free
    number; no record is ever replaced."""
    state_dir = tmp_path / "state"
    script = ("import sys\nfrom provisioner.agent import state\n"
              "for i in range(40):\n    state.write(sys.argv[1], {'writer': sys.argv[2], 'i': i})\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(state_dir), name]) for name in ("x", "y", "z")]
    try:
        assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    finally:
        for writer in writers:
            writer.kill()
    records = {int(p.stem): json.loads(p.read_text()) for p in (state_dir / "generations").glob("*.json")}
    assert sorted(records) == list(range(1, 121)), "120 writes, 120 consecutive numbers"
    assert all(record["generation"] == number for number, record in records.items())
    assert sorted((r["writer"], r["i"]) for r in records.values()) == sorted(
        (w, i) for w in "xyz" for i in range(40)), "every write is kept"
    assert not [p for p in (state_dir / "generations").iterdir() if not p.name.endswith(".json")], "no temp files"
