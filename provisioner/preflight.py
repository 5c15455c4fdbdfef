"""Preflight: read the host's facts and resolve the stack before anything is changed."""

from __future__ import annotations

from typing import Any

from provisioner.agent_client import AgentClient
from provisioner.catalog import load_catalog
from provisioner.errors import ProvisionError
from provisioner.facts import Facts
from provisioner.manifest.model import Manifest
from provisioner.resolve import Resolution, render_resolution, resolve


class PreflightError(ProvisionError):
    """The manifest cannot be satisfied on this host; every violation is listed with its fix."""


def needs_resolution(manifest: Manifest) -> bool:
    """Only stack manifests (ComfyUI, models) need the catalog; a plain layout does not."""
    return manifest.comfyui is not None or bool(manifest.models)


def facts_request(manifest: Manifest) -> dict[str, Any]:
    return {"root": manifest.target.root, "venv": manifest.python.adopt or manifest.python.venv}


def gather_facts(client: AgentClient, manifest: Manifest) -> Facts:
    """One round trip: the agent's facts, validated."""
    return Facts.model_validate(client.call("facts", facts_request(manifest)))


def resolve_or_refuse(manifest: Manifest, facts: Facts, host: str) -> Resolution:
    resolution = resolve(manifest, facts, load_catalog())
    if not resolution.ok:
        raise PreflightError(f"{host}: preflight refused the manifest; nothing was changed.\n"
                             + render_resolution(resolution, manifest.name))
    return resolution
