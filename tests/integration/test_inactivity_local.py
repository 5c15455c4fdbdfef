"""The inactivity limit and the agent's stop on the local transport and on the stream `docker exec` uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.errors import TransportError
from provisioner.transport.inactivity import STOP_GRACE_S
from provisioner.transport.local import LocalTransport
from provisioner.transport.stream import stream
from tests.support.hosts import TargetHost, write_manifest

SLACK_S = 10.0  # generous: the suite runs 4 workers on 2 cores, so every process may run 3-4x slower


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(condition: object, seconds: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_a_silent_local_program_fails_after_the_limit_and_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"local: sh sent nothing for 1s \(target.inactivity_timeout\)"):
        LocalTransport().run(["sh", "-c", f'echo $$ > {pid_file}; echo working; exec sleep 30'], idle_timeout=1,
                             timeout=60)
    took = time.monotonic() - started
    assert 1 <= took <= 1 + STOP_GRACE_S + SLACK_S, took
    assert not _running(int(pid_file.read_text()))


def test_output_resets_the_limit(tmp_path: Path) -> None:
    # Ten lines 0.3 s apart last ~3 s in all, longer than the 2 s limit, so only the output resetting it lets
    # the run succeed; each gap is well under the limit so a loaded machine still has ample slack.
    lines = [str(i) for i in range(1, 11)]
    done = LocalTransport().run(["sh", "-c", f"for i in {' '.join(lines)}; do echo $i; sleep 0.3; done"],
                                idle_timeout=2)
    assert done.ok and done.stdout.split() == lines


def test_the_stream_the_docker_exec_client_runs_in_has_the_same_limit() -> None:
    started = time.monotonic()
    done = stream(["sh", "-c", "echo one; exec sleep 30"], b"", dict(os.environ), timeout=60, idle_timeout=1)
    assert done.stopped == "idle" and done.stdout == "one" and done.returncode != 0
    assert time.monotonic() - started <= 1 + STOP_GRACE_S + SLACK_S


def test_a_program_left_by_an_interrupted_caller_is_stopped(tmp_path: Path) -> None:
    """Ctrl-C arrives while a line is handled: the program must not go on changing the host behind the
    caller's back. It gets SIGTERM first (an agent stops its step on it), then SIGKILL."""
    pid_file = tmp_path / "pid"
    program = ["sh", "-c", f"echo $$ > {pid_file}; trap 'echo term > {tmp_path / 'trapped'}; exit 143' TERM; "
               "echo ready; while :; do sleep 0.1; done"]

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stream(program, b"", dict(os.environ), on_line=interrupt)
    pid = int(pid_file.read_text())
    assert _wait_for(lambda: not _running(pid), STOP_GRACE_S + SLACK_S)
    assert (tmp_path / "trapped").read_text() == "term\n"


def test_an_agent_stopped_by_sigterm_stops_its_step_and_says_so(tmp_path: Path) -> None:
    """SIGTERM to the agent mid-step (an operator, or systemd stopping a session): the step's whole process
    group goes too, nothing after it runs, and the controller reports it with exit 1."""
    root = tmp_path / "root"
    host = TargetHost("local", "local", str(root))
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "command", "name": "slow", "creates": "done",
         "argv": ["sh", "-c", "echo $PPID > agent.pid; sleep 30 & echo $! > child.pid; wait; touch done"]},
        {"kind": "file", "path": "after.txt", "content": "2\n"},
    ]})
    running = subprocess.Popen([sys.executable, "-m", "provisioner", "apply", str(manifest)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (root / "child.pid").exists() or running.poll() is not None, 60)
        assert running.poll() is None
        os.kill(int((root / "agent.pid").read_text()), signal.SIGTERM)
        stdout, stderr = running.communicate(timeout=30)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 1, (stdout, stderr)
    assert "stopped by signal 15" in stderr and "Traceback" not in stderr
    grandchild = int((root / "child.pid").read_text())
    assert _wait_for(lambda: not _running(grandchild), SLACK_S), "the step's own children are stopped too"
    assert not (root / "done").exists() and not (root / "after.txt").exists()
