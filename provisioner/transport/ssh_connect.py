"""Opening the one SSH connection of a run: address parsing, ~/.ssh/config, host keys, retries, clear errors."""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from fabric import Config, Connection
from paramiko.ssh_exception import NoValidConnectionsError

from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transport.ssh_hostkeys import (
    HostKeyError,
    StrictHostKeyPolicy,
    changed_key_error,
    load_known_hosts,
)

CONNECT_TRIES = 3
FIRST_BACKOFF_S = 0.5


@dataclass(frozen=True)
class SshAddress:
    """What `ssh://[user@]host[:port]` says; the host may be an ~/.ssh/config alias."""

    host: str
    user: str | None = None
    port: int | None = None


def parse_address(connection: str) -> SshAddress:
    """Split an ssh:// URL by hand: urlsplit would lowercase an alias, and aliases are case-sensitive."""
    rest = connection.removeprefix("ssh://").rstrip("/")
    user, _, hostport = rest.rpartition("@")
    host, port_text = hostport, ""
    if hostport.startswith("["):  # [v6::addr]:port
        host, _, tail = hostport[1:].partition("]")
        port_text = tail.removeprefix(":")
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise TransportError(f"{connection}: no host name; write ssh://[user@]host[:port]")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise TransportError(f"{connection}: {port_text!r} is not a port number (1-65535)")
        port = int(port_text)
    return SshAddress(host=host, user=user or None, port=port)


def build_connection(target: Target, display: str, known_hosts: Path, trust_new_hosts: bool) -> Connection:
    """A Fabric Connection (not yet open) with ~/.ssh/config applied and strict host-key checks on every hop."""
    address = parse_address(target.connection)
    timeout = math.ceil(target.connect_timeout)  # Fabric truncates to int; 0 would mean "no timeout"
    connect_kwargs: dict[str, Any] = {"banner_timeout": timeout, "auth_timeout": timeout}
    if target.identity_file:
        connect_kwargs["key_filename"] = [str(Path(target.identity_file).expanduser())]
    connection = Connection(
        address.host,
        user=address.user or target.user,
        port=address.port or target.port,
        config=Config(),  # loads ~/.ssh/config and /etc/ssh/ssh_config: aliases, IdentityFile, ProxyJump
        connect_timeout=timeout,
        connect_kwargs=connect_kwargs,
    )
    for hop in hops(connection):
        # Fabric trusts any new key by default; every hop (jump hosts included) is checked the same way.
        hop_display = display if hop is connection else f"{display} (via jump host {hop.host}:{hop.port})"
        hop.client.set_missing_host_key_policy(StrictHostKeyPolicy(hop_display, known_hosts, trust_new_hosts))
        load_known_hosts(hop.client, known_hosts, hop.host, hop.port)
    return connection


def hops(connection: Connection) -> Iterator[Connection]:
    hop: Any = connection
    while isinstance(hop, Connection):
        yield hop
        hop = hop.gateway


def open_connection(connection: Connection, display: str, known_hosts: Path, timeout: float) -> None:
    """Connect, retrying transient failures (refused, timed out, dropped handshake) with backoff."""
    delay = FIRST_BACKOFF_S
    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            if not connection.gateway:
                connection.connect_kwargs["sock"] = _socket(connection, timeout)
            connection.open()
            for hop in hops(connection):
                if isinstance(hop.transport.sock, socket.socket):
                    hop.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return
        except Exception as exc:
            _close_quietly(connection)
            error, transient = _explain(exc, connection, display, known_hosts, timeout)
            if error is None:
                raise
            if not transient or attempt == CONNECT_TRIES:
                raise error from None
        time.sleep(delay)
        delay *= 2


def _socket(connection: Connection, timeout: float) -> socket.socket:
    """Our own TCP socket, so that Nagle is off from the first packet: the handshake, and every command's
    exec request followed by its stdin EOF, are small back-to-back writes that Nagle would hold for the
    peer's delayed ACK (~40 ms each)."""
    plain = socket.create_connection((connection.host, connection.port), timeout=timeout)
    sock = _QuickAckSocket(fileno=plain.detach()) if hasattr(socket, "TCP_QUICKACK") else plain
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _QuickAckSocket(socket.socket):
    """The same stall seen from our side: the server's Nagle. After authentication OpenSSH writes its host
    keys, a debug notice and then the first channel's confirmation back to back, and holds the last one
    until we acknowledge the others, which Linux delays by up to 40 ms. TCP_QUICKACK makes the next
    acknowledgement immediate and does not stick, so it is re-armed after every read."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


def _explain(
    exc: Exception, connection: Connection, display: str, known_hosts: Path, timeout: float
) -> tuple[TransportError | None, bool]:
    """The user-facing error for a failed connect, and whether trying again may help."""
    where = f"{connection.host}:{connection.port}"
    tries = f"(tried {CONNECT_TRIES} times)"
    if isinstance(exc, HostKeyError):
        return exc, False
    if isinstance(exc, paramiko.BadHostKeyException):
        return changed_key_error(display, known_hosts, exc, connection.port), False
    if isinstance(exc, paramiko.AuthenticationException) or (
        isinstance(exc, paramiko.SSHException) and "authentication methods" in str(exc)
    ):
        user = connection.user
        return TransportError(
            f"{display}: authentication failed for user {user!r} on {where}: the host accepted none of the "
            f"offered keys. Set target.identity_file to a private key whose public half is in ~{user}/.ssh/"
            f"authorized_keys on the host (e.g. `ssh-copy-id -i KEY -p {connection.port} {user}@{connection.host}`), "
            "or load the key into ssh-agent."
        ), False
    if isinstance(exc, socket.gaierror):
        return TransportError(
            f"{display}: cannot resolve the host name {connection.host!r} ({exc.strerror}). Check the spelling, "
            "or define it as a Host alias in ~/.ssh/config."
        ), False
    if isinstance(exc, (NoValidConnectionsError, ConnectionRefusedError)):
        return TransportError(
            f"{display}: connection refused by {where} {tries}. Is sshd running there and listening on port "
            f"{connection.port}? Check the port in the connection URL or in ~/.ssh/config."
        ), True
    if isinstance(exc, TimeoutError):
        return TransportError(
            f"{display}: timed out after {timeout:g}s connecting to {where} {tries}. Check that the host is up "
            f"and that nothing drops traffic to port {connection.port}, or raise target.connect_timeout."
        ), True
    if isinstance(exc, paramiko.ChannelException):
        return TransportError(
            f"{display}: the jump host could not open a connection to {where}: {exc}. Check ProxyJump and the "
            "target's address as the jump host sees it."
        ), True
    if isinstance(exc, (paramiko.SSHException, EOFError, ConnectionError, OSError)):
        return TransportError(
            f"{display}: the SSH handshake with {where} failed {tries}: {exc or type(exc).__name__}. Check that "
            f"port {connection.port} is an SSH server."
        ), True
    return None, False


def _close_quietly(connection: Connection) -> None:
    # A half-open connection may fail to close; the next try starts fresh anyway.
    with contextlib.suppress(Exception):
        connection.close()
