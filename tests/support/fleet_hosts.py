"""Many real SSH hosts on loopback: one sshd per host (own port, own host key), one shared client key.

Each host's target root is a directory of this machine, so tests look at the result directly. The
known_hosts file pins every server's key; servers are stopped by PID when the fixture ends.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.sshd import SshServer, _keygen, require_sshd, start_sshd


@dataclass
class FleetServers:
    """N running sshd processes sharing one client key and one known_hosts file."""

    directory: Path
    servers: list[SshServer]
    client_key: Path
    known_hosts: Path

    def ensure_running(self) -> None:
        """Restart any server a previous test stopped (same port, same host key)."""
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                server.start()

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@contextmanager
def fleet_servers(directory: Path, count: int) -> Iterator[FleetServers]:
    require_sshd()
    directory.mkdir(parents=True, exist_ok=True)
    client_key = directory / "client_key"
    _keygen(client_key, "provision-fleet-client")
    servers: list[SshServer] = []
    fleet = FleetServers(directory, servers, client_key, directory / "known_hosts")
    try:
        for index in range(count):
            servers.append(start_sshd(directory / f"sshd-{index:02d}", client_key))
        fleet.known_hosts.write_text("".join(s.known_hosts_line() for s in servers))
        yield fleet
    finally:
        fleet.stop_all()
        shutil.rmtree(directory, ignore_errors=True)


def host_name(index: int) -> str:
    return f"gpu-{index:02d}"


def write_fleet(directory: Path, fleet: FleetServers, roots: Path, manifest: str,
                rollout: dict[str, Any] | None = None, count: int | None = None,
                host_vars: dict[int, dict[str, Any]] | None = None, groups: dict[str, Any] | None = None,
                defaults_vars: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                defaults_target: dict[str, Any] | None = None,
                host_extra: dict[int, dict[str, Any]] | None = None) -> Path:
    """An inventory of the first `count` servers, each with its own root under `roots` and a port var;
    `extra` adds top-level sections (e.g. download_cache), `defaults_target` target fields for every host,
    `host_extra` more fields of one host's entry (e.g. its target)."""
    servers: Sequence[SshServer] = fleet.servers[: count or len(fleet.servers)]
    hosts = {}
    for index, server in enumerate(servers):
        hosts[host_name(index)] = {
            "connection": server.connection(),
            "root": str(roots / host_name(index)),
            "vars": {"port": 8100 + index, **(host_vars or {}).get(index, {})},
            **(host_extra or {}).get(index, {}),
        }
    document: dict[str, Any] = {
        "defaults": {"manifest": manifest, "target": {"identity_file": str(fleet.client_key),
                                                      **(defaults_target or {})},
                     "vars": defaults_vars or {}},
        "groups": groups or {},
        "hosts": hosts,
        "rollout": rollout or {},
        **(extra or {}),
    }
    path = directory / "fleet.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def read_generations(root: Path) -> list[dict[str, Any]]:
    """The generation records an apply left under a target root (read directly on this machine)."""
    import json

    folder = root / ".provision" / "generations"
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
