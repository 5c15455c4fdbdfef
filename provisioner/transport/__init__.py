"""Transports: local (subprocess), SSH (Fabric) and Docker (docker exec)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transport.base import RunResult, Transport
from provisioner.transport.local import LocalTransport


@dataclass(frozen=True)
class ConnectOptions:
    """Controller-side connection choices that are not part of the manifest."""

    trust_new_hosts: bool = False
    known_hosts: Path | None = None
    verbose: bool = False


def open_transport(target: Target, options: ConnectOptions | None = None) -> Transport:
    """The transport for a manifest's target connection."""
    transport = _open(target, options or ConnectOptions())
    transport.inactivity_timeout = target.inactivity_timeout
    return transport


def _open(target: Target, options: ConnectOptions) -> Transport:
    if target.connection == "local":
        return LocalTransport()
    scheme = target.connection.split("://", 1)[0]
    if scheme == "ssh":
        from provisioner.transport.ssh import open_ssh

        return open_ssh(target, options)
    if scheme in ("docker", "docker-image"):
        from provisioner.transport.docker import open_docker

        return open_docker(target, options)
    raise TransportError(f"{target.connection}: unknown transport {scheme!r}")


__all__ = ["ConnectOptions", "LocalTransport", "RunResult", "Transport", "TransportError", "open_transport"]
