"""Per-host sessions: the host's manifest with its inventory settings applied, and one connection per host.

Every host is expanded before the first connection opens, so a bad inventory or manifest touches no host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from provisioner.engine import HostSession, RunOptions
from provisioner.fleet.inventory import FleetError, FleetHost, deep_merge
from provisioner.manifest import LoadedManifest, load_manifest
from provisioner.manifest.model import Manifest, Target
from provisioner.report import Masker
from provisioner.transport import Transport, open_transport
from provisioner.transport.base import LineCallback, RunResult


def host_manifest(base: LoadedManifest, host: FleetHost) -> LoadedManifest:
    """`base` with the host's target, vars and section overrides applied (re-validated when sections change)."""
    manifest = base.manifest
    target = Target.model_validate(deep_merge(manifest.target.model_dump(exclude_unset=True), host.target))
    update: dict[str, Any] = {"target": target, "vars": deep_merge(manifest.vars, host.vars)}
    if host.overrides:
        data = deep_merge(manifest.model_dump(exclude_unset=True), host.overrides)
        try:
            manifest = Manifest.model_validate(data)
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise FleetError(f"host {host.name}: overrides make {base.path} invalid: {details}") from None
    return LoadedManifest(manifest.model_copy(update=update), base.path, base.source)


class SharedTransport(Transport):
    """One connection per host for the whole fleet run: the engine's per-call close() leaves it open."""

    def __init__(self, target: Target, options: RunOptions) -> None:
        self.target = target
        self.options = options
        self.display = target.connection
        self.inactivity_timeout = target.inactivity_timeout
        self._inner: Transport | None = None
        self._lock = threading.Lock()

    def for_session(self, _loaded: LoadedManifest, _options: RunOptions) -> Transport:
        """The engine's transport factory: every call of the host's session gets this connection."""
        return self

    def _transport(self) -> Transport:
        with self._lock:
            if self._inner is None:
                self._inner = open_transport(self.target, self.options.connect)
            return self._inner

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None, env: Mapping[str, str] | None = None,
            timeout: float | None = None, on_stdout_line: LineCallback | None = None,
            idle_timeout: float | None = None) -> RunResult:
        return self._transport().run(argv, stdin=stdin, env=env, timeout=timeout, on_stdout_line=on_stdout_line,
                                     idle_timeout=idle_timeout)

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        self._transport().put(local, remote, mode)

    def get(self, remote: str, local: Path) -> None:
        self._transport().get(remote, local)

    def finalize(self, succeeded: bool) -> None:
        self._transport().finalize(succeeded)

    def close(self) -> None:
        """Kept open across the engine's calls; `shutdown` releases it."""

    def shutdown(self) -> None:
        with self._lock:
            if self._inner is not None:
                self._inner.close()
                self._inner = None


@dataclass
class PreparedHost:
    """A host ready to run: its session (expanded), its connection, and a digest of what it will apply."""

    host: FleetHost
    session: HostSession
    transport: SharedTransport
    digest: str

    def mask(self, text: str) -> str:
        # Built per call: a stack manifest only knows its secrets once it is expanded against the host's facts.
        return Masker(self.session.secrets)(text)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def target(self) -> Target:
        return self.session.loaded.manifest.target

    def close(self) -> None:
        self.transport.shutdown()


def prepare_hosts(hosts: Sequence[FleetHost], options: RunOptions,
                  environ: dict[str, str] | None = None) -> list[PreparedHost]:
    """Load, layer and expand every host's manifest (each manifest file is read once)."""
    bases: dict[Path, LoadedManifest] = {}
    prepared = []
    for host in hosts:
        if host.manifest not in bases:
            bases[host.manifest] = load_manifest(host.manifest)
        loaded = host_manifest(bases[host.manifest], host)
        transport = SharedTransport(loaded.manifest.target, options)
        session = HostSession(loaded, options, transport_factory=transport.for_session, environ=environ)
        prepared.append(PreparedHost(host, session, transport, _digest(session)))
    return prepared


def _digest(session: HostSession) -> str:
    """What the host will be made to match; a resumed rollout redoes a finished host when this changed.

    The effective manifest always counts; the expanded resources (rendered templates included) too where
    they exist before contacting the host, i.e. for manifests without a stack to resolve.
    """
    document: dict[str, Any] = {"manifest": session.loaded.manifest.model_dump(mode="json")}
    with contextlib.suppress(RuntimeError):  # a stack manifest is expanded after the host's facts are known
        document["resources"] = session.expansion.payload()
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode("utf-8")).hexdigest()
