"""Preflight: read the host's facts and resolve the stack before anything is changed."""

from __future__ import annotations

import re
from typing import Any

from provisioner.agent_client import AgentClient
from provisioner.catalog import load_catalog
from provisioner.errors import ProvisionError
from provisioner.facts import Facts
from provisioner.manifest.model import Manifest
from provisioner.manifest.source import SourceMap
from provisioner.resolve import Resolution, render_resolution, resolve
from provisioner.transport import open_transport


class PreflightError(ProvisionError):
    """The manifest cannot be satisfied on this host; every violation is listed with its fix."""


def facts_request(manifest: Manifest) -> dict[str, Any]:
    options = manifest.nunchaku.build_options
    compilers = [path for path in (options.cc, options.cxx) if path]
    return {"root": manifest.target.root, "venv": manifest.python.adopt or manifest.python.venv,
            "compilers": compilers}


def gather_facts(client: AgentClient, manifest: Manifest) -> Facts:
    """One round trip: the agent's facts, validated."""
    return Facts.model_validate(client.call("facts", facts_request(manifest)))


def live_facts(manifest: Manifest) -> Facts:
    """The target host's facts, in one read-only round trip on a connection of its own."""
    with open_transport(manifest.target) as transport:
        client = AgentClient(transport, python=manifest.target.python, timeout=manifest.target.connect_timeout * 6)
        return gather_facts(client, manifest)


def resolve_or_refuse(manifest: Manifest, facts: Facts, host: str, source: SourceMap | None = None) -> Resolution:
    """The resolution, or a PreflightError listing every violation (each located in the manifest by `source`)."""
    resolution = resolve(manifest, facts, load_catalog())
    if not resolution.ok:
        located = [f"  at {where}" for where in _locations(resolution, source)]
        raise PreflightError(f"{host}: preflight refused the manifest; nothing was changed.\n"
                             + "\n".join([render_resolution(resolution, manifest.name), *located]))
    return resolution


def _locations(resolution: Resolution, source: SourceMap | None) -> list[str]:
    """`file:line:column: field` for each violation about a manifest field (not those about the host)."""
    if source is None:
        return []
    out = []
    for violation in resolution.violations:
        if violation.field == "host":
            continue
        path = tuple(int(part) if part.isdigit() else part
                     for part in re.split(r"\.|\[|\]\.?", violation.field) if part)
        out.append(str(source.issue(path, f"[{violation.field}] is what to change")))
    return out
