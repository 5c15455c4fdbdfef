"""Real OpenSSH servers on 127.0.0.1 for the suite: generated host key, an authorized client key, pinned known_hosts.

The suite shares one server (started on first use, stopped by PID when the session ends) and sets
PROVISION_KNOWN_HOSTS to its pinned known_hosts file, so every plan/apply in the run checks the host key
strictly without touching ~/.ssh. Tests that kill or restart a server start their own with `start_sshd`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.transport.ssh_hostkeys import KNOWN_HOSTS_ENV
from tests.support.hosts import TargetHost

SSHD = Path("/usr/sbin/sshd")
START_TIMEOUT_S = 10.0

_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
# The suite runs as root and its temp dirs are not root-only: allow both.
PermitRootLogin prohibit-password
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowTcpForwarding yes
MaxSessions 100
MaxStartups 100
LogLevel INFO
# Login shells that run `pyenv init` rehash under a lock; a session killed mid-rehash (the fault
# tests do that) leaves the lock behind and every later login would wait 60 s for it.
SetEnv PYENV_REHASH_TIMEOUT=1
Subsystem sftp internal-sftp
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


@dataclass
class SshServer:
    """One sshd process; `directory` holds its config, keys, known_hosts and log."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        return self.directory / "client_key"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file pinning this server's host key."""
        return self.directory / "known_hosts"

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"

    def connection(self, user: str = "root") -> str:
        return f"ssh://{user}@127.0.0.1:{self.port}"

    def known_hosts_line(self) -> str:
        key_type, key = (self.directory / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {key}\n"

    def accepted_logins(self) -> int:
        """Connections that authenticated so far (sshd logs one line per accepted connection)."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def start(self) -> None:
        """Start (or restart) sshd on the same port and wait until it answers with an SSH banner."""
        assert self.process is None or self.process.poll() is not None, "already running"
        # sshd refuses to start without its privilege separation directory (normally made by the service unit).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.directory / "sshd_config")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on 127.0.0.1:{self.port} within {START_TIMEOUT_S}s")

    def kill_sessions(self) -> list[int]:
        """SIGKILL the per-connection sshd processes (not the listener): every open connection drops."""
        assert self.process is not None
        victims = _descendants(self.process.pid)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return victims

    def sshd_processes(self) -> list[int]:
        """The listener and every per-connection sshd process, by PID; not the programs they serve."""
        assert self.process is not None
        return [self.process.pid, *(pid for pid in _descendants(self.process.pid) if _is_sshd(pid))]

    def program_processes(self) -> list[int]:
        """What the sessions run (the agent, the steps it started): descendants that are not sshd."""
        assert self.process is not None
        return [pid for pid in _descendants(self.process.pid) if not _is_sshd(pid)]

    def kill_sshd(self) -> list[int]:
        """SIGKILL sshd itself, as `kill -9` of its PIDs would: the listener and the session processes, but
        not the programs the sessions run, which live on with their stdout pipes gone."""
        victims = self.sshd_processes()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=5)
        return victims

    def stop(self) -> None:
        """Stop the listener and any session it still serves, by PID."""
        if self.process is None or self.process.poll() is not None:
            return
        children = _descendants(self.process.pid)
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def freeze_descendants(pid: int) -> list[int]:
    """SIGSTOP every descendant of `pid`; returns the PIDs stopped. A descendant may exit between the
    listing and its signal (a session's short-lived exec child), and a running one may fork meanwhile:
    the tree is listed again until a listing finds nothing new (a few rounds at most)."""
    stopped: list[int] = []
    for _ in range(10):
        fresh = [child for child in _descendants(pid) if child not in stopped]
        if not fresh:
            break
        for child in fresh:
            try:
                os.kill(child, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            stopped.append(child)
    return stopped


def _descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of `pid`, from /proc (no process-name matching)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces; the parent PID is the 2nd field after its ')'.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found


def _is_sshd(pid: int) -> bool:
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == str(SSHD)
    except OSError:
        return False


def require_sshd() -> None:
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is missing: apt-get install -y openssh-server")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is missing: apt-get install -y openssh-client")


def start_sshd(directory: Path, client_key: Path | None = None) -> SshServer:
    """A new sshd on a free loopback port, with its own host key; `client_key` is reused when given."""
    require_sshd()
    directory.mkdir(parents=True, exist_ok=True)
    server = SshServer(directory, _free_port())
    _keygen(server.host_key, "provision-test-host")
    if client_key is not None:
        shutil.copyfile(client_key, server.client_key)
        shutil.copyfile(f"{client_key}.pub", f"{server.client_key}.pub")
        server.client_key.chmod(0o600)
    else:
        _keygen(server.client_key, "provision-test-client")
    shutil.copyfile(f"{server.client_key}.pub", directory / "authorized_keys")
    (directory / "sshd_config").write_text(_CONFIG.format(port=server.port, dir=directory))
    server.known_hosts.write_text(server.known_hosts_line())
    server.start()
    return server


_shared: SshServer | None = None


def shared_sshd(request: pytest.FixtureRequest) -> SshServer:
    """The session's sshd, started on first use; pins its key through PROVISION_KNOWN_HOSTS for every run."""
    global _shared
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        require_sshd()
        directory = Path(tempfile.mkdtemp(prefix="provision-sshd-"))
        server = start_sshd(directory)
        previous = os.environ.get(KNOWN_HOSTS_ENV)
        os.environ[KNOWN_HOSTS_ENV] = str(server.known_hosts)

        def cleanup() -> None:
            global _shared
            server.stop()
            if previous is None:
                os.environ.pop(KNOWN_HOSTS_ENV, None)
            else:
                os.environ[KNOWN_HOSTS_ENV] = previous
            shutil.rmtree(directory, ignore_errors=True)
            _shared = None

        request.config.add_cleanup(cleanup)
        _shared = server
    return _shared


def ssh_target_host(request: pytest.FixtureRequest, tmp_path: Path) -> TargetHost:
    """A target root on the shared sshd; the server is this machine, so tests inspect it directly."""
    server = shared_sshd(request)
    return TargetHost(
        "ssh",
        server.connection(),
        str(tmp_path / "root"),
        target_extra={"identity_file": str(server.client_key)},
    )
