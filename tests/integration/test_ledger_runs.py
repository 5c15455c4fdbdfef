"""Every run reaches the ledger: failed ones, ones that raise, Ctrl-C, SIGTERM and SIGKILL included."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.concurrent_runs import Run, run, two_state_manifest, wait_for_holder, wait_for_slow_step
from tests.support.hosts import TargetHost
from tests.support.kills import group_members, processes_running
from tests.support.servers import free_port


def _history(ledger: dict[str, str]) -> list[dict[str, Any]]:
    done = run("history", "--json", "--limit", "100", env=ledger)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["runs"]  # type: ignore[no-any-return]


def _by_started(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["command"], r["manifest"], r["status"]) for r in sorted(rows, key=lambda r: r["started"])]


def test_failed_refused_and_unreachable_runs_are_recorded(tmp_path: Path) -> None:
    ledger = {"PROVISION_LEDGER": str(tmp_path / "ledger.sqlite")}
    host = TargetHost("local", "local", str(tmp_path / "root"))
    failing = tmp_path / "failing.yaml"
    failing.write_text(yaml.safe_dump({"name": "failing", "target": host.target(), "resources": [
        {"kind": "command", "name": "boom", "argv": ["false"], "creates": "never"}]}))
    unreachable = tmp_path / "unreachable.yaml"
    unreachable.write_text(yaml.safe_dump({"name": "unreachable", "target": {
        "connection": f"ssh://root@127.0.0.1:{free_port()}", "root": "/srv/x", "connect_timeout": 5},
        "resources": [{"kind": "file", "path": "a", "content": "a"}]}))
    gate = tmp_path / "release-the-holder"  # the holder holds the root until the checks below are done
    slow = two_state_manifest(tmp_path, host, "A", slow_seconds=90, gate=gate)

    assert run("apply", str(failing), env=ledger).returncode == 1
    for command in ("plan", "apply"):
        done = run(command, str(unreachable), env=ledger)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    holder = Run("apply", str(slow), env=ledger)
    try:
        wait_for_holder(host.root, holder)
        refused = run("apply", str(slow), env=ledger)
        assert refused.returncode == 1
        running = [r for r in _history(ledger) if r["status"] == "running"]
        assert [(r["manifest"], r["command"]) for r in running] == [("state-a", "apply")], \
            "a run in progress is in the ledger as running"
        gate.touch()
        assert holder.finish().returncode == 0
    finally:
        holder.kill()

    rows = _history(ledger)
    assert _by_started(rows) == [("apply", "failing", "failed"), ("plan", "unreachable", "failed"),
                                 ("apply", "unreachable", "failed"), ("apply", "state-a", "ok"),
                                 ("apply", "state-a", "failed")]
    errors = {(r["command"], r["manifest"], r["exit_code"]): r["summary"].get("error", "") for r in rows}
    assert "127.0.0.1" in errors[("apply", "unreachable", 1)]
    assert "is locked by apply pid" in errors[("apply", "state-a", 1)]
    assert all(r["exit_code"] in (0, 1) for r in rows)


def _still_running(pgid: int, gate: Path, bound: float = 5.0) -> list[tuple[str, ...]]:
    """The controller's group (its agent) and the slow step (in a group of its own), after `bound` seconds."""
    deadline = time.monotonic() + bound
    while True:
        step = [argv for pid in processes_running(["sh", "-c"]) if str(gate) in " ".join(argv := _argv(pid))]
        left = [m.argv for m in group_members(pgid)] + step
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _argv(pid: int) -> tuple[str, ...]:
    try:
        return tuple(Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0"))
    except OSError:
        return ()


def test_interrupted_runs_are_recorded_as_interrupted(tmp_path: Path) -> None:
    ledger = {"PROVISION_LEDGER": str(tmp_path / "ledger.sqlite")}
    host = TargetHost("local", "local", str(tmp_path / "root"))
    # The slow step waits on a gate nobody opens (120 s at most): it ends only by the signal, however
    # slowly a loaded machine delivers it.
    gate = tmp_path / "never-opened"
    slow = two_state_manifest(tmp_path, host, "A", slow_seconds=120, gate=gate)
    quick = two_state_manifest(tmp_path, host, "B", slow_seconds=0)
    outcomes = {}
    # Ctrl-C reaches the whole foreground group (controller and agent); SIGTERM only the controller;
    # SIGKILL the whole group, and nothing gets to write anything.
    for signum, group in ((signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGKILL, True)):
        victim = Run("apply", str(slow), env=ledger)
        try:
            wait_for_slow_step(host.root, victim)
            if group:
                victim.signal_group(signum)
            else:
                victim.process.send_signal(signum)
            ended = victim.finish(timeout=90)
            outcomes[signum.name] = (ended.returncode, ended.stderr)
            if signum == signal.SIGTERM:
                # Only the controller was signalled: it stops its agent and the step on the way out, at once
                # (the agent's heartbeat would notice the lost controller only at its next beat, 10 s on).
                left = _still_running(victim.pid, gate)
                assert not left, f"the agent and its step outlived the controller's SIGTERM: {left}"
        finally:
            victim.kill()
    assert outcomes["SIGINT"][0] == 1 and "Traceback" not in outcomes["SIGINT"][1], outcomes["SIGINT"]
    assert outcomes["SIGTERM"][0] == 1 and "Traceback" not in outcomes["SIGTERM"][1], outcomes["SIGTERM"]
    assert outcomes["SIGKILL"][0] == -signal.SIGKILL

    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        stored = [row[0] for row in db.execute("SELECT status FROM runs ORDER BY id")]
    assert stored == ["interrupted", "interrupted", "running"], "a SIGKILL leaves its row as written at the start"
    shown = _history(ledger)
    assert [r["status"] for r in sorted(shown, key=lambda r: r["started"])] == ["interrupted"] * 3, \
        "history shows a running row whose controller is gone as interrupted"
    assert [r["summary"].get("error") for r in sorted(shown, key=lambda r: r["started"])] == [
        "interrupted by Ctrl-C", "interrupted by SIGTERM", None]
    text = run("history", env=ledger).stdout
    assert [line.split()[2] for line in text.splitlines()] == ["interrupted"] * 3, text

    started = time.monotonic()
    after = run("apply", str(quick), env=ledger)  # --lock-timeout 0: a held lock would be refused at once
    assert after.returncode == 0, after.stdout + after.stderr
    assert "is locked by" not in after.stderr, "no interrupted run left the root locked: " + after.stderr
    # Generous (a loaded machine runs 3-4x slower): only a gross wait, like a stale lock's expiry, exceeds it.
    assert time.monotonic() - started < 60, "no interrupted run left the root locked"


def test_fleet_apply_records_each_host_and_honours_the_lock(tmp_path: Path) -> None:
    ledger = {"PROVISION_LEDGER": str(tmp_path / "state" / "ledger.sqlite")}
    roots = [str(tmp_path / f"root-{i}") for i in range(2)]
    (tmp_path / "app.yaml").write_text(yaml.safe_dump({
        "name": "app", "resources": [{"kind": "file", "path": "app.conf", "content": "v1\n"}]}))
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text(yaml.safe_dump({
        "defaults": {"manifest": "app.yaml"},
        "hosts": {f"h{i}": {"connection": "local", "root": root} for i, root in enumerate(roots)}}))
    holder_host = TargetHost("local", "local", roots[0])
    gate = tmp_path / "release-the-holder"
    slow = two_state_manifest(tmp_path, holder_host, "A", slow_seconds=90, gate=gate)
    holder = Run("apply", str(slow), env=ledger)
    waiting: Run | None = None
    try:
        wait_for_holder(roots[0], holder)
        refused = run("fleet", "apply", "--json", str(inventory), env=ledger)
        waiting = Run("fleet", "apply", "--json", "--lock-timeout", "1m", str(inventory), env=ledger)
        # --json keeps stdout for the report; stderr still says which host waits, and for whom.
        notice = waiting.wait_for_stderr(f"root {roots[0]} is locked by apply pid")
        assert re.search(r"h0 +waiting +root .* is locked by apply pid .*; waiting up to 60s", notice), notice
        gate.touch()
        assert holder.finish().returncode == 0
        waited = waiting.finish()
    finally:
        holder.kill()
        if waiting is not None:
            waiting.kill()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    hosts = {h["host"]: h for h in json.loads(refused.stdout)["hosts"]}
    assert hosts["h1"]["status"] == "ok" and hosts["h0"]["status"] == "failed"
    assert f"root {roots[0]} is locked by apply pid" in hosts["h0"]["error"]
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert {h["host"]: h["status"] for h in json.loads(waited.stdout)["hosts"]} == {"h0": "ok", "h1": "ok"}
    assert Path(roots[0], "app.conf").read_text() == "v1\n"

    fleet_rows = [r for r in _history(ledger) if r["manifest"] == "app"]
    assert sorted((r["host"], r["status"]) for r in fleet_rows) == [("h0", "failed"), ("h0", "ok"),
                                                                    ("h1", "ok"), ("h1", "ok")]
