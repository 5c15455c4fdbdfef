"""Preflight: read the host's facts and resolve the stack before anything is changed."""

from __future__ import annotations

from typing import Any

from provisioner.agent_client import AgentClient
from provisioner.catalog import load_catalog
from provisioner.errors import ProvisionError
from provisioner.facts import Facts
from provisioner.manifest.model import Manifest
from provisioner.resolve import Resolution, render_resolution, resolve
from provisioner.transport import open_transport


class PreflightError(ProvisionError):
    """The manifest cannot be satisfied on this host; every violation is listed with its fix."""


def facts_request(manifest: Manifest) -> dict[str, Any]:
    return {"root": manifest.target.root, "venv": manifest.python.adopt or manifest.python.venv}


def gather_facts(client: AgentClient, manifest: Manifest) -> Facts:
    """One round trip: the agent's facts, validated."""
    return Facts.model_validate(client.call("facts", facts_request(manifest)))


def live_facts(manifest: Manifest) -> Facts:
    """The target host's facts, in one read-only round trip on a connection of its own."""
    with open_transport(manifest.target) as transport:
        client = AgentClient(transport, python=manifest.target.python, timeout=manifest.target.connect_timeout * 6)
        return gather_facts(client, manifest)


def resolve_or_refuse(manifest: Manifest, facts: Facts, host: str) -> Resolution:
    resolution = resolve(manifest, facts, load_catalog())
    if not resolution.ok:
        raise PreflightError(f"{host}: preflight refused the manifest; nothing was changed.\n"
                             + render_resolution(resolution, manifest.name))
    return resolution
