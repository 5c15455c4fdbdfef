"""Transport faults against a real OpenSSH server: sshd killed by PID mid-apply, a frozen session, heartbeats.

Each test runs the real CLI in a subprocess and does to sshd what an operator or a crash would: SIGKILL of
its PIDs (not of the programs its sessions run, which live on as orphans), SIGSTOP of the session and the
agent, and a step that stays silent for longer than the inactivity limit.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.agent.procs import STOP_GRACE_SECONDS
from provisioner.transport.inactivity import heartbeat_interval
from tests.support.hosts import TargetHost, write_manifest
from tests.support.servers import serve_handler
from tests.support.sshd import SshServer, freeze_descendants, shared_sshd, start_sshd

pytestmark = pytest.mark.ssh

PROVISION = [sys.executable, "-m", "provisioner"]
# Rounds of the sshd-kill test; PROVISION_SSHD_KILL_ROUNDS=10 measures the ten.
KILL_ROUNDS = int(os.environ.get("PROVISION_SSHD_KILL_ROUNDS", "4"))
# A step that writes its PIDs, waits `delay` seconds (a file the test rewrites) and records that it ran.
SLOW_STEP = ('echo $PPID > agent.pid; echo $$ > step.pid; sleep "$(cat delay)"; echo ran >> ran.log; '
             "touch done")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[SshServer]:
    """A server of this test's own: the tests kill and freeze it."""
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


def _host(server: SshServer, root: Path, inactivity: float) -> TargetHost:
    return TargetHost("ssh", server.connection(), str(root), target_extra={
        "identity_file": str(server.client_key), "inactivity_timeout": inactivity, "connect_timeout": 5})


def _slow_manifest(tmp_path: Path, host: TargetHost) -> Path:
    return write_manifest(tmp_path, host, {"resources": [
        {"kind": "file", "path": "before.txt", "content": "1\n"},
        {"kind": "command", "name": "slow", "argv": ["sh", "-c", SLOW_STEP], "creates": "done"},
        {"kind": "file", "path": "after.txt", "content": "2\n"},
    ]})


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROVISION, *args], capture_output=True, text=True, timeout=timeout)


def _start_apply(manifest: Path, server: SshServer) -> subprocess.Popen[str]:
    return subprocess.Popen([*PROVISION, "apply", str(manifest), "--known-hosts", str(server.known_hosts)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition: object, seconds: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _alive(pid: int) -> bool:
    """Running (a zombie has finished: its parent just has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pids(root: Path) -> list[int]:
    return [int((root / name).read_text()) for name in ("agent.pid", "step.pid") if (root / name).exists()]


def _finish(running: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return running.communicate(timeout=timeout)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()


def _kill_by_pid(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def test_sshd_killed_mid_apply_fails_the_host_stops_the_orphan_and_the_next_apply_converges(
    own_server: SshServer, tmp_path: Path
) -> None:
    """`kill -9` of sshd's PIDs at chosen points of an apply, then sshd restarted on the same port and host
    key: the CLI fails with exit 1 and says the connection dropped; the agent the dead session leaves
    behind stops its step within its heartbeat interval instead of finishing it behind the next apply's
    back; the next apply converges."""
    inactivity = 4.0
    root = tmp_path / "root"
    manifest = _slow_manifest(tmp_path, _host(own_server, root, inactivity))
    rng = random.Random(12)
    converged = 0
    leftovers: list[int] = []
    try:
        for round_ in range(KILL_ROUNDS):
            # Round 0 kills while the controller gathers facts and probes; the others while the step runs.
            _kill_round(own_server, manifest, root, round_, rng.uniform(0.0, 1.0), inactivity, leftovers)
            converged += 1
    finally:
        _kill_by_pid([pid for pid in leftovers if _alive(pid)])
    assert converged == KILL_ROUNDS
    print(f"\nsshd killed mid-apply: {converged}/{KILL_ROUNDS} converged on the next apply")


def _kill_round(server: SshServer, manifest: Path, root: Path, round_: int, delay: float, inactivity: float,
                leftovers: list[int]) -> None:
    known_hosts = ["--known-hosts", str(server.known_hosts)]
    root.mkdir(exist_ok=True)
    for name in ("done", "agent.pid", "step.pid", "ran.log"):
        (root / name).unlink(missing_ok=True)
    (root / "delay").write_text("30\n")
    logins = server.accepted_logins()
    running = _start_apply(manifest, server)
    if round_ == 0:
        assert _wait_for(lambda: server.accepted_logins() > logins or running.poll() is not None, 30)
        time.sleep(delay / 4)
    else:
        assert _wait_for(lambda: len(_pids(root)) == 2 or running.poll() is not None, 60), "the step never started"
        time.sleep(delay)
    assert running.poll() is None, _finish(running, 5)
    orphans = _pids(root)
    leftovers += orphans
    server.kill_sshd()
    stdout, stderr = _finish(running, 60)
    assert running.returncode == 1, (round_, stdout, stderr)
    assert "Traceback" not in stderr
    assert "connection dropped" in stderr and server.connection() in stderr, stderr

    # The dead session's agent notices at its next heartbeat and stops its step, which never finishes.
    # Bound: a heartbeat, SIGTERM to the step's group and its grace before SIGKILL, a loaded machine's slack.
    bound = heartbeat_interval(inactivity) + STOP_GRACE_SECONDS + 15
    gone = _wait_for(lambda: not any(_alive(pid) for pid in orphans), bound)
    assert gone, f"round {round_}: the orphaned agent/step {orphans} still runs {bound:g}s after the drop"
    assert not (root / "ran.log").exists(), "the interrupted step finished behind the controller's back"

    (root / "delay").write_text("0\n")
    server.start()
    again = _cli("apply", str(manifest), *known_hosts)
    assert again.returncode == 0, (round_, again.stdout, again.stderr)
    assert (root / "ran.log").read_text() == "ran\n" and (root / "after.txt").read_text() == "2\n"
    assert _cli("plan", str(manifest), *known_hosts).returncode == 0


def test_a_frozen_session_fails_the_host_within_the_inactivity_limit(own_server: SshServer, tmp_path: Path) -> None:
    """SIGSTOP of the sshd session and the agent by PID mid-step: the TCP connection stays up (the kernel
    still acknowledges), so only the inactivity limit can tell. The CLI fails within it with exit 1 and
    names the host and the limit; once thawed, the abandoned agent stops its step and exits."""
    inactivity = 3.0
    root = tmp_path / "root"
    root.mkdir()
    (root / "delay").write_text("30\n")
    manifest = _slow_manifest(tmp_path, _host(own_server, root, inactivity))
    running = _start_apply(manifest, own_server)
    frozen: list[int] = []
    try:
        assert _wait_for(lambda: len(_pids(root)) == 2 or running.poll() is not None, 60), "the step never started"
        assert running.poll() is None, _finish(running, 5)
        assert own_server.process is not None
        frozen = freeze_descendants(own_server.process.pid)  # the session's sshd processes, the agent, the step
        started = time.monotonic()
        stdout, stderr = _finish(running, 60)
        took = time.monotonic() - started
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert running.returncode == 1, (stdout, stderr)
    assert "Traceback" not in stderr
    assert own_server.connection() in stderr and "sent nothing for 3s" in stderr, stderr
    assert "target.inactivity_timeout" in stderr
    # The limit counts from the last heartbeat before the freeze; plus the poll interval and a loaded
    # machine's slack. Far below command_timeout (1 h), which used to be the only bound.
    assert inactivity - heartbeat_interval(inactivity) - 0.1 <= took <= inactivity + STOP_GRACE_SECONDS + 10, took
    print(f"\nfrozen session: the CLI failed after {took:.1f}s (inactivity_timeout {inactivity:g}s)")

    agent_and_step = _pids(root)
    orphan_bound = heartbeat_interval(inactivity) + STOP_GRACE_SECONDS + 15
    try:
        assert _wait_for(lambda: not any(_alive(pid) for pid in agent_and_step), orphan_bound), agent_and_step
        assert not (root / "ran.log").exists()
    finally:
        _kill_by_pid([pid for pid in agent_and_step if _alive(pid)])
    (root / "delay").write_text("0\n")
    again = _cli("apply", str(manifest), "--known-hosts", str(own_server.known_hosts))
    assert again.returncode == 0, again.stderr


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Sends half a file, says nothing for STALL_S (longer than the test's inactivity limit), then the rest."""

    BODY = os.urandom(256 * 1024)
    STALL_S = 10.0

    def do_GET(self) -> None:
        half = len(self.BODY) // 2
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY[:half])
        self.wfile.flush()
        time.sleep(self.STALL_S)
        self.wfile.write(self.BODY[half:])

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_steps_slower_than_the_inactivity_limit_succeed_on_heartbeats(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A command and a download that each stay silent for twice the limit: the agent's heartbeats keep the
    call alive, and they never show up in the output."""
    import hashlib

    server = shared_sshd(request)
    inactivity = 5.0  # wide enough that a loaded machine's late heartbeat still arrives within it
    root = tmp_path / "root"
    root.mkdir()
    (root / "delay").write_text("10\n")
    with serve_handler(_StallingHandler) as base:
        manifest = write_manifest(tmp_path, _host(server, root, inactivity), {"resources": [
            {"kind": "command", "name": "slow", "argv": ["sh", "-c", SLOW_STEP], "creates": "done"},
            {"kind": "download", "path": "model.bin", "url": f"{base}/model.bin",
             "sha256": hashlib.sha256(_StallingHandler.BODY).hexdigest()},
        ]})
        started = time.monotonic()
        applied = _cli("apply", str(manifest), "--known-hosts", str(server.known_hosts), "-v")
        took = time.monotonic() - started
    assert applied.returncode == 0, (applied.stdout, applied.stderr)
    assert took > 2 * inactivity * 2, "both steps were silent for longer than the limit"
    assert (root / "ran.log").read_text() == "ran\n"
    assert (root / "model.bin").read_bytes() == _StallingHandler.BODY
    assert "heartbeat" not in applied.stdout + applied.stderr


def test_parallel_pushes_that_share_missing_parent_directories_all_succeed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A fleet pushes to its hosts in parallel, and hosts that share a machine share parents of their roots:
    several SFTP sessions then create the same missing directory at once. The ones that lose the race got
    a bare SFTP `Failure` (mkdir of an existing directory); like `mkdir -p`, that is success."""
    import threading

    from provisioner.errors import TransportError
    from provisioner.manifest.model import Target
    from provisioner.transport import ConnectOptions, open_transport

    server = shared_sshd(request)
    target = Target.model_validate({"connection": server.connection(), "root": str(tmp_path),
                                    "identity_file": str(server.client_key)})
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(64 * 1024))
    sessions = [open_transport(target, ConnectOptions(known_hosts=server.known_hosts)) for _ in range(6)]
    failures: list[str] = []
    try:
        for round_ in range(5):
            start = threading.Barrier(len(sessions))

            def push(index: int, round_: int = round_, start: threading.Barrier = start) -> None:
                remote = tmp_path / f"roots-{round_}" / "shared" / f"gpu-{index}" / ".provision" / "incoming" / "f"
                start.wait(timeout=30)
                try:
                    sessions[index].put(source, str(remote), 0o644)
                except TransportError as exc:
                    failures.append(str(exc))

            threads = [threading.Thread(target=push, args=(i,)) for i in range(len(sessions))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        for session in sessions:
            session.close()
    assert failures == []
    copies = sorted(tmp_path.glob("roots-*/shared/gpu-*/.provision/incoming/f"))
    assert len(copies) == 5 * len(sessions) and all(c.read_bytes() == source.read_bytes() for c in copies)


def test_an_sftp_copy_to_a_frozen_host_fails_within_the_inactivity_limit(own_server: SshServer, tmp_path: Path) -> None:
    """SIGSTOP of the session's sshd processes before the SFTP session exists and in the middle of using it:
    each copy fails within the limit (paramiko alone waits up to an hour) and names the limit."""
    from provisioner.errors import TransportError
    from provisioner.manifest.model import Target
    from provisioner.transport import ConnectOptions, open_transport

    target = Target.model_validate({"connection": own_server.connection(), "root": str(tmp_path),
                                    "identity_file": str(own_server.client_key), "inactivity_timeout": 2})
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(8 * 1024 * 1024))
    assert own_server.process is not None
    for warm in (False, True):
        with open_transport(target, ConnectOptions(known_hosts=own_server.known_hosts)) as transport:
            if warm:
                transport.put(source, str(tmp_path / "first.bin"))
            frozen = freeze_descendants(own_server.process.pid)
            started = time.monotonic()
            try:
                with pytest.raises(TransportError) as failed:
                    transport.put(source, str(tmp_path / f"copy-{warm}.bin"))
                took = time.monotonic() - started
            finally:
                for pid in frozen:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
        assert "sent nothing for 2s (target.inactivity_timeout)" in str(failed.value)
        assert own_server.connection() in str(failed.value)
        assert 2 <= took <= 2 + 10, (warm, took)
