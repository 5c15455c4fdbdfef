"""Transports: local (subprocess), SSH (Fabric) and Docker (docker exec)."""

from __future__ import annotations

from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transport.base import RunResult, Transport
from provisioner.transport.local import LocalTransport


def open_transport(target: Target) -> Transport:
    """The transport for a manifest's target connection."""
    if target.connection == "local":
        return LocalTransport()
    scheme = target.connection.split("://", 1)[0]
    raise TransportError(f"{target.connection}: the {scheme} transport is not available in this build")


__all__ = ["LocalTransport", "RunResult", "Transport", "TransportError", "open_transport"]
