"""A remote host over SSH: one Fabric connection per run, one session channel per command."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath

import paramiko
from fabric import Connection

from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transport import ConnectOptions
from provisioner.transport.base import LineCallback, RunResult, Transport
from provisioner.transport.inactivity import inactivity_error
from provisioner.transport.ssh_connect import build_connection, hops, open_connection
from provisioner.transport.ssh_hostkeys import known_hosts_path

# How often a blocked read wakes up to check the deadline and that the connection is still alive.
POLL_S = 0.25
KEEPALIVE_S = 15
CHUNK = 65536
#: Under become, where `put` streams a file (as the login user, relative to its home) before sudo moves it.
BECOME_INCOMING = ".cache/provision/incoming"

_SUDO_REFUSALS = re.compile(
    r"^sudo: (a password is required|.*incorrect password|.*is not in the sudoers|.*not allowed to execute"
    r"|a terminal is required|no tty present|.*may not run sudo)",
    re.MULTILINE,
)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Reads NAME=VALUE lines from stdin up to a blank line, exports them, then execs the command: environment
# values (which may be secrets) travel on stdin, never in the remote argv where `ps` would show them, and
# without depending on sshd's AcceptEnv. `read` consumes a pipe byte by byte, so the payload after the
# blank line reaches the command untouched.
_ENV_PRELUDE = 'while IFS= read -r kv && [ -n "$kv" ]; do export "$kv"; done; exec "$@"'


def open_ssh(target: Target, options: ConnectOptions) -> Transport:
    """Connect to an ssh:// target (one connection, reused by every command of the run)."""
    return SshTransport(target, options)


class SshTransport(Transport):
    """Known hosts: --known-hosts, else $PROVISION_KNOWN_HOSTS, else ~/.ssh/known_hosts."""

    def __init__(self, target: Target, options: ConnectOptions) -> None:
        self.target = target
        self.display = target.connection
        self.known_hosts = known_hosts_path(options.known_hosts)
        # A missing sudo password is a local mistake: report it before touching the host.
        self._sudo_password = self._become_password()
        self._sudo_prefix: list[str] | None = None
        self._conn: Connection = build_connection(target, self.display, self.known_hosts, options.trust_new_hosts)
        open_connection(self._conn, self.display, self.known_hosts, target.connect_timeout)
        self._transport: paramiko.Transport = self._conn.client.get_transport()
        self.inactivity_timeout = target.inactivity_timeout
        keep_alive(self._conn, KEEPALIVE_S, target.inactivity_timeout)
        #: Session channels opened on the connection (one per command); the connection itself is one.
        self.sessions = 0
        self._sftp_client: paramiko.SFTPClient | None = None

    # -- run ---------------------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_stdout_line: LineCallback | None = None,
        idle_timeout: float | None = None,
    ) -> RunResult:
        command, prelude = self._command(argv, env)
        code, out, err = self._exec(command, prelude + (stdin or b""), timeout, on_stdout_line, argv[0],
                                    idle_timeout)
        stderr = err.decode("utf-8", "replace")
        if self.target.become:
            self._check_sudo(code, stderr)
        return RunResult(code, out.decode("utf-8", "replace").rstrip("\n"), stderr)

    def _command(self, argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[str, bytes]:
        """The remote command line (every word quoted) and the bytes that must precede stdin."""
        words = list(argv)
        prelude = b""
        if env:
            words = ["sh", "-c", _ENV_PRELUDE, "sh", *words]
            prelude = _env_lines(env)
        if self.target.become:
            prefix, password_line = self._become()
            words = [*prefix, *words]
            prelude = password_line + prelude
        return shlex.join(words), prelude

    def _exec(
        self, command: str, data: bytes, timeout: float | None, on_line: LineCallback | None, program: str,
        idle_timeout: float | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run one command on a fresh session channel; stream stdout lines; fail cleanly on a drop, a timeout
        or (with `idle_timeout`) a host that has sent nothing for that long."""
        channel = self._open_session()
        deadline = time.monotonic() + timeout if timeout else None
        idle = _Idle(idle_timeout)
        try:
            channel.exec_command(command)
            errors: list[bytes] = []
            # stdin and stderr each get a thread: the remote program may read, write stdout and write stderr in
            # any order, and a full window on one of them must not stall the others.
            writer = threading.Thread(target=_feed, args=(channel, data), daemon=True)
            reader = threading.Thread(target=_drain_stderr, args=(channel, errors), daemon=True)
            writer.start()
            reader.start()
            out = self._read_stdout(channel, deadline, on_line, program, timeout, idle)
            idle.touch()
            self._wait_exit(channel, deadline, program, timeout, idle)
            reader.join(timeout=30)  # stderr is at EOF by now; the bound only guards a server that skips EOF
            code = channel.recv_exit_status()
            if code == -1 and not self._transport.is_active():
                raise self._dropped(program)
            return code, out, b"".join(errors)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not self._transport.is_active():
                raise self._dropped(program) from None
            raise TransportError(f"{self.display}: running {program} failed: {exc}") from None
        finally:
            channel.close()

    def _open_session(self) -> paramiko.Channel:
        if not self._transport.is_active():
            raise self._dropped("a command")
        try:
            channel = self._transport.open_session(timeout=self.target.connect_timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not self._transport.is_active():
                raise self._dropped("a command") from None
            raise TransportError(f"{self.display}: the host refused a new SSH session: {exc}") from None
        self.sessions += 1
        channel.settimeout(POLL_S)
        return channel

    def _read_stdout(
        self, channel: paramiko.Channel, deadline: float | None, on_line: LineCallback | None, program: str,
        timeout: float | None, idle: _Idle,
    ) -> bytes:
        chunks: list[bytes] = []
        pending = b""
        while True:
            try:
                chunk = channel.recv(CHUNK)
            except TimeoutError:
                self._check_alive(deadline, program, timeout, idle)
                continue
            if not chunk:
                break
            idle.touch()
            chunks.append(chunk)
            if on_line is None:
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", "replace"))
        if on_line is not None and pending:
            on_line(pending.decode("utf-8", "replace"))
        return b"".join(chunks)

    def _wait_exit(self, channel: paramiko.Channel, deadline: float | None, program: str,
                   timeout: float | None, idle: _Idle) -> None:
        while not channel.status_event.wait(POLL_S):
            self._check_alive(deadline, program, timeout, idle)

    def _check_alive(self, deadline: float | None, program: str, timeout: float | None, idle: _Idle) -> None:
        if not self._transport.is_active():
            raise self._dropped(program)
        if idle.expired():
            raise inactivity_error(self.display, program, idle.limit or 0)
        if deadline is not None and time.monotonic() > deadline:
            raise TransportError(
                f"{self.display}: {program} timed out after {timeout:g}s and was abandoned; raise "
                "target.command_timeout if it needs longer"
            )

    def _dropped(self, program: str) -> TransportError:
        return TransportError(
            f"{self.display}: the SSH connection dropped while running {program}. Nothing after that point "
            "ran; check that the host is up and apply again (it picks up where this run stopped)."
        )

    # -- become ------------------------------------------------------------------------------------------

    def _become_password(self) -> bytes | None:
        name = self.target.become_password_env
        if not (self.target.become and name):
            return None
        value = os.environ.get(name)
        if value is None:
            raise TransportError(
                f"{self.display}: target.become_password_env names ${name}, which is not set on this machine; "
                "export it, or remove become_password_env if sudo needs no password"
            )
        return value.encode("utf-8") + b"\n"

    def _become(self) -> tuple[list[str], bytes]:
        """sudo -n where no password is needed; otherwise sudo -S with the password as the first stdin line."""
        if self._sudo_prefix is None:
            self._sudo_prefix = ["sudo", "-n", "--"]
            if self._sudo_password is not None:
                # Probe first: under NOPASSWD sudo would not read the password and the command would get it.
                code, _, _ = self._exec("sudo -n true", b"", self.target.connect_timeout, None, "sudo")
                if code != 0:
                    # -k: a cached credential would also leave the password line unread.
                    self._sudo_prefix = ["sudo", "-k", "-S", "-p", "", "--"]
        password = self._sudo_password if "-S" in self._sudo_prefix else None
        return self._sudo_prefix, password or b""

    def _check_sudo(self, code: int, stderr: str) -> None:
        if code == 127 and "sudo" in stderr and "not found" in stderr:
            raise TransportError(f"{self.display}: target.become is set but sudo is not installed on the host")
        refusal = _SUDO_REFUSALS.search(stderr) if code != 0 else None
        if refusal:
            fix = ("check the password in $" + self.target.become_password_env
                   if self.target.become_password_env else
                   "allow the user NOPASSWD in sudoers, or set target.become_password_env to the name of an "
                   "environment variable holding the sudo password")
            raise TransportError(f"{self.display}: sudo refused: {refusal.group(0)}; {fix}")

    # -- files -------------------------------------------------------------------------------------------

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        if self.target.become:
            self._put_become(local, remote, mode)
            return
        try:
            sftp = self._sftp()
            _sftp_makedirs(sftp, str(PurePosixPath(remote).parent))
            sftp.put(str(local), remote)
            if mode is not None:
                sftp.chmod(remote, mode)
        except TimeoutError:
            raise inactivity_error(self.display, "the SFTP server", self.inactivity_timeout) from None
        except (OSError, paramiko.SSHException) as exc:
            raise TransportError(f"{self.display}: cannot copy {local} to {remote}: {exc}") from None

    def _put_become(self, local: Path, remote: str, mode: int | None) -> None:
        """SFTP writes as the login user, which may not write `remote`: stream the file into that user's
        ~/.cache/provision/incoming, then move it into place through sudo (owned by the sudo'ed user, as
        if that user had written it). Nothing is ever held in memory whole: models are many gigabytes."""
        try:
            sftp = self._sftp()
            incoming = f"{sftp.normalize('.')}/{BECOME_INCOMING}"
            _sftp_makedirs(sftp, incoming)
            staged = f"{incoming}/{uuid.uuid4().hex}.part"
            sftp.put(str(local), staged)
        except TimeoutError:
            raise inactivity_error(self.display, "the SFTP server", self.inactivity_timeout) from None
        except (OSError, paramiko.SSHException) as exc:
            raise TransportError(f"{self.display}: cannot copy {local} to the login user's "
                                 f"~/{BECOME_INCOMING}: {exc}") from None
        chmod = ' && chmod "$3" "$2"' if mode is not None else ""
        script = ('mkdir -p -- "$(dirname -- "$2")" && mv -f -- "$1" "$2" && chown "$(id -u):$(id -g)" -- "$2"'
                  + chmod)
        argv = ["sh", "-c", script, "sh", staged, remote, *([f"{mode:o}"] if mode is not None else [])]
        result = self.run(argv, timeout=self.target.command_timeout)
        if not result.ok:
            with contextlib.suppress(OSError, paramiko.SSHException):
                sftp.remove(staged)
            raise TransportError(f"{self.display}: cannot move {local.name} into {remote} through sudo: "
                                 f"{result.stderr.strip()}")

    def get(self, remote: str, local: Path) -> None:
        if self.target.become:
            command, prelude = self._command(["cat", "--", remote], None)
            code, out, err = self._exec(command, prelude, self.target.command_timeout, None, "cat")
            if code != 0:
                raise TransportError(f"{self.display}: cannot read {remote}: {err.decode(errors='replace').strip()}")
            local.write_bytes(out)
            return
        try:
            self._sftp().get(remote, str(local))
        except FileNotFoundError:
            raise TransportError(f"{self.display}: {remote} does not exist") from None
        except TimeoutError:
            raise inactivity_error(self.display, "the SFTP server", self.inactivity_timeout) from None
        except (OSError, paramiko.SSHException) as exc:
            raise TransportError(f"{self.display}: cannot copy {remote}: {exc}") from None

    def _sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session. Opening it and every reply after are bounded by the inactivity
        limit (paramiko would wait up to an hour for a frozen host): TimeoutError, which callers report."""
        if self._sftp_client is None:
            self._sftp_client = _within(self._conn.client.open_sftp, self.inactivity_timeout)
            self._sftp_client.get_channel().settimeout(self.inactivity_timeout)
        return self._sftp_client

    def close(self) -> None:
        if self._sftp_client is not None:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self._sftp_client.close()
        self._conn.close()


class _Idle:
    """When the host last sent a byte on a channel, against the call's inactivity limit (None: no limit)."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def expired(self) -> bool:
        return self.limit is not None and time.monotonic() - self.last > self.limit


def keep_alive(connection: Connection, interval: float, dead_after: float) -> None:
    """SSH keepalives on every hop, and TCP_USER_TIMEOUT on their sockets: a keepalive that the peer's
    kernel does not acknowledge within `dead_after` seconds (host down, link cut) drops the connection,
    instead of TCP retrying for ~15 minutes. A host that is frozen but still acknowledges is caught by
    the inactivity limit of the call instead."""
    for hop in hops(connection):
        hop.transport.set_keepalive(max(1, int(min(interval, dead_after / 2))))
        sock = hop.transport.sock
        if isinstance(sock, socket.socket) and hasattr(socket, "TCP_USER_TIMEOUT"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead_after * 1000))


def _within(opener: Callable[[], paramiko.SFTPClient], seconds: float) -> paramiko.SFTPClient:
    """`opener()`, or TimeoutError after `seconds`: paramiko's subsystem request waits without a limit. The
    abandoned thread ends when the run closes the connection."""
    opened: list[paramiko.SFTPClient] = []
    failed: list[BaseException] = []

    def attempt() -> None:
        try:
            opened.append(opener())
        except BaseException as exc:  # handed to the caller's thread as is
            failed.append(exc)

    worker = threading.Thread(target=attempt, name="sftp-open", daemon=True)
    worker.start()
    worker.join(seconds)
    if failed:
        raise failed[0]
    if not opened:
        raise TimeoutError(f"no SFTP session within {seconds:g}s")
    return opened[0]


def _env_lines(env: Mapping[str, str]) -> bytes:
    lines = []
    for key, value in env.items():
        if not _ENV_KEY.match(key) or "\n" in value or "\0" in value:
            raise TransportError(f"environment variable {key!r}: names must be identifiers and values one line")
        lines.append(f"{key}={value}\n")
    return "".join(lines).encode("utf-8") + b"\n"


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    """Write stdin then EOF; the channel's short timeout only means "window still full", so keep waiting."""
    offset = 0
    try:
        while offset < len(data):
            try:
                offset += channel.send(data[offset:offset + CHUNK])
            except TimeoutError:
                if channel.closed or channel.exit_status_ready():
                    return
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the program exited without reading everything, or the connection dropped: the reader reports it


def _drain_stderr(channel: paramiko.Channel, errors: list[bytes]) -> None:
    """Collect stderr until EOF. A read can time out just as the last bytes and the close arrive (paramiko
    checks the clock before the buffer), so a timeout only means "read again": once the channel is closed
    or at EOF, its buffer hands back what is left and then b"" without waiting."""
    while True:
        try:
            chunk = channel.recv_stderr(CHUNK)
        except TimeoutError:
            continue
        except (OSError, EOFError):
            return
        if not chunk:
            return
        errors.append(chunk)


def _sftp_makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    missing: list[str] = []
    current = PurePosixPath(path)
    while str(current) not in ("/", "."):
        try:
            if stat.S_ISDIR(sftp.stat(str(current)).st_mode or 0):
                break
        except FileNotFoundError:
            missing.append(str(current))
        current = current.parent
    for directory in reversed(missing):
        try:
            sftp.mkdir(directory)
        except OSError:
            # SFTP reports "it exists" as a bare Failure. Another session may have made it between our stat
            # and mkdir: pushes of a fleet run in parallel, and hosts may share a parent (one machine, many
            # roots). Like `mkdir -p`, that is success; anything else is the real error.
            if not _is_directory(sftp, directory):
                raise


def _is_directory(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
    except OSError:
        return False
