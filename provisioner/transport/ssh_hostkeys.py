"""Host-key checking for SSH: strict by default, trust-on-first-use only when asked, never on a changed key."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import paramiko

from provisioner.errors import TransportError

# Lets a test session (or a CI job) pin hosts in its own file without touching ~/.ssh.
KNOWN_HOSTS_ENV = "PROVISION_KNOWN_HOSTS"


class HostKeyError(TransportError):
    """The host's key is unknown or has changed: never retried, never bypassed silently."""


def known_hosts_path(explicit: Path | None) -> Path:
    """--known-hosts, else $PROVISION_KNOWN_HOSTS, else ~/.ssh/known_hosts."""
    if explicit is not None:
        return explicit.expanduser()
    from_env = os.environ.get(KNOWN_HOSTS_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path("~/.ssh/known_hosts").expanduser()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, so it can be compared with `ssh-keygen -lf`."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_entry_name(host: str, port: int) -> str:
    """The name known_hosts uses for host:port (bracketed unless on port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def load_known_hosts(client: paramiko.SSHClient, path: Path, host: str, port: int) -> None:
    """Trust, for the connection to host:port, exactly the keys `path` records for it (a missing file
    trusts nothing). Keys go into the client's own set, which paramiko never writes back to a file, so the
    user's file keeps its comments and hashing."""
    if not path.exists():
        return
    name = host_entry_name(host, port)
    recorded = _parsed_known_hosts(path).lookup(name)
    for key_type, key in (recorded or {}).items():
        client.get_host_keys().add(name, key_type, key)


_parsed: dict[tuple[str, int, int], paramiko.HostKeys] = {}
_parsed_lock = threading.Lock()


def _parsed_known_hosts(path: Path) -> paramiko.HostKeys:
    """`path` parsed once per version of the file: a fleet run connects to every host in it, and parsing
    the whole file for each one made host-key loading grow with the square of the fleet."""
    try:
        info = path.stat()
        version = (str(path), info.st_mtime_ns, info.st_size)
        with _parsed_lock:
            parsed = _parsed.get(version)
            if parsed is None:
                parsed = paramiko.HostKeys(str(path))
                _parsed.clear()
                _parsed[version] = parsed
            return parsed
    except (OSError, paramiko.SSHException) as exc:
        raise TransportError(f"cannot read known_hosts file {path}: {exc}") from None


def _split_entry_name(name: str) -> tuple[str, int]:
    if name.startswith("[") and "]:" in name:
        host, _, port = name[1:].partition("]:")
        return host, int(port)
    return name, 22


class StrictHostKeyPolicy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Refuses an unknown host with the exact command that would trust it, or records it when trusted."""

    def __init__(self, display: str, known_hosts: Path, trust_new_hosts: bool) -> None:
        self.display = display
        self.known_hosts = known_hosts
        self.trust_new_hosts = trust_new_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.trust_new_hosts:
            self._record(client, hostname, key)
            return
        host, port = _split_entry_name(hostname)
        port_flag = f"-p {port} " if port != 22 else ""
        raise HostKeyError(
            f"{self.display}: the host key of {hostname} is not known ({key.get_name()} {fingerprint(key)}); "
            f"it is not in {self.known_hosts}. If this is the host you expect, re-run with --trust-new-hosts, "
            f"or record its key first: ssh-keyscan {port_flag}{host} >> {self.known_hosts}"
        )

    def _record(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        try:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            needs_newline = self.known_hosts.exists() and not self.known_hosts.read_bytes().endswith(b"\n") \
                and self.known_hosts.stat().st_size > 0
            with self.known_hosts.open("a", encoding="ascii") as handle:
                handle.write(("\n" if needs_newline else "") + f"{hostname} {key.get_name()} {key.get_base64()}\n")
        except OSError as exc:
            raise HostKeyError(f"{self.display}: cannot record the host key in {self.known_hosts}: {exc}") from None
        client.get_host_keys().add(hostname, key.get_name(), key)


def changed_key_error(
    display: str, known_hosts: Path, exc: paramiko.BadHostKeyException, port: int
) -> HostKeyError:
    """The loud refusal for a key that differs from the recorded one (possible man-in-the-middle)."""
    name = host_entry_name(str(exc.hostname), port)
    return HostKeyError(
        f"{display}: WARNING: THE HOST KEY HAS CHANGED for {name}!\n"
        f"  recorded in {known_hosts}: {exc.expected_key.get_name()} {fingerprint(exc.expected_key)}\n"
        f"  offered by the host:      {exc.key.get_name()} {fingerprint(exc.key)}\n"
        "  Someone may be intercepting the connection, or the host was reinstalled. Refusing to connect "
        "(--trust-new-hosts never accepts a changed key). If you know why it changed, remove the old key with "
        f"`ssh-keygen -R '{name}' -f {known_hosts}` and connect again."
    )
