"""Plan and apply one manifest on one host: expand on the controller, then one agent call each."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from provisioner import __version__
from provisioner.agent_client import AgentClient, EventCallback
from provisioner.expand import Expansion, expand
from provisioner.lock.mirrors import NO_MIRRORS, Mirrors, find_mirrors_file, load_mirrors
from provisioner.manifest.loader import LoadedManifest
from provisioner.removal_report import Removal, UnmanagedEntry, removals, unmanaged_entries, watched_folders
from provisioner.rootlock import DEFAULT_LOCK_TIMEOUT, lock_request
from provisioner.stack import needs_resolution
from provisioner.transport import ConnectOptions, Transport, open_transport
from provisioner.trusted_generations import (
    remember_apply,
    remember_rollback,
    trusted_for_plan,
    trusted_for_rollback,
)

if TYPE_CHECKING:
    from provisioner.facts import Facts
    from provisioner.lock.use import LockNotes
    from provisioner.resolve import Resolution


@dataclass
class RunOptions:
    force: bool = False
    deep: bool = False
    verbose: bool = False
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    #: Fetch downloads once into this controller directory and push them to the host (None: hosts fetch).
    download_cache: Path | None = None
    #: The ledger that keeps what each generation was sent (None: the default ledger).
    ledger: Path | None = None
    #: Seconds to wait for another run's lock on the target root (0: refuse at once).
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    #: Also remove large data (models) that the manifest dropped; `state: absent` removes it regardless.
    prune: bool = False


TransportFactory = Callable[[LoadedManifest, RunOptions], Transport]


class ApplyGuard(Protocol):
    """Checks an apply must pass once the host's facts are in (a saved plan's), and what the agent must
    then find on the host, by resource id (see planfile.PlanGuard and agent/planguard.py)."""

    def expect(self, session: HostSession, host: str) -> dict[str, Any]: ...


@dataclass
class PlanReport:
    host: str
    root: str
    manifest: str
    resources: list[dict[str, Any]]
    seconds: float
    origins: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: What the manifest does not know in custom_nodes and the model folders (information only).
    unmanaged: list[UnmanagedEntry] = field(default_factory=list)

    @property
    def pending(self) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["status"] not in ("ok", "kept")]

    @property
    def removals(self) -> list[Removal]:
        return removals(self.resources)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["status"] == "error"]

    def exit_code(self) -> int:
        if self.errors:
            return 1
        return 2 if self.pending else 0

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "root": self.root, "manifest": self.manifest, "seconds": self.seconds,
                "resources": [dict(_public_row(r), origin=self.origins.get(r["id"])) for r in self.resources],
                "notes": self.notes, "summary": summarize(self.resources, "status"),
                "destroy": [r.as_json() for r in self.removals],
                "unmanaged": [u.as_json() for u in self.unmanaged]}


@dataclass
class ApplyReport:
    host: str
    root: str
    manifest: str
    resources: list[dict[str, Any]]
    handlers: list[dict[str, Any]]
    reprobe: list[dict[str, Any]]
    generation: int | None
    failed: bool
    seconds: float
    rollback_to: int | None = None
    #: Downloads (and built wheels) pushed from the controller's cache, by resource id.
    pushed: list[str] = field(default_factory=list)
    #: What every report of this stack must repeat, e.g. the unsupported-arch override of a source build.
    warnings: list[str] = field(default_factory=list)

    @property
    def unconverged(self) -> list[dict[str, Any]]:
        return [r for r in self.reprobe if r["status"] not in ("ok", "kept")]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unconverged

    @property
    def failures(self) -> list[str]:
        """Ids of the resources that failed (those that needed them are `skipped`, with `after` naming one)."""
        return [r["id"] for r in self.resources if r["outcome"] == "failed"]

    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "root": self.root, "manifest": self.manifest, "seconds": self.seconds,
                "ok": self.ok, "generation": self.generation, "rollback_to": self.rollback_to,
                "resources": self.resources,
                "handlers": self.handlers, "unconverged": [_public_row(r) for r in self.unconverged],
                "pushed": self.pushed, "warnings": self.warnings,
                "failures": self.failures,
                "summary": summarize(self.resources, "outcome")}


def _public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A probe row without the observed-state digest, which only saved plans use."""
    return {k: v for k, v in row.items() if k != "observed_digest"}


def summarize(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[key]] = counts.get(row[key], 0) + 1
    return counts


def default_transport(loaded: LoadedManifest, options: RunOptions) -> Transport:
    return open_transport(loaded.manifest.target, options.connect)


@dataclass
class StackExpansion:
    """A stack manifest expanded against one host's facts."""

    #: What the resolver chose, lock pins applied and URLs through the mirrors, as reports show it.
    resolution: Resolution
    lock_notes: LockNotes
    expansion: Expansion


def expand_stack(loaded: LoadedManifest, facts: Facts, resolution: Resolution, mirrors: Mirrors = NO_MIRRORS,
                 environ: dict[str, str] | None = None) -> StackExpansion:
    """Overlay the lock, expand the roles from the upstream URLs, then send every resource through the mirrors."""
    from provisioner.lock import rewrite_resolution, use_lock
    from provisioner.stack import stack_context

    locked, lock_notes = use_lock(loaded, resolution)
    context = {"resolved": locked.model_dump(mode="json"), "facts": facts.model_dump(mode="json"),
               "stack": stack_context(loaded.manifest, locked)}
    expansion = expand(loaded, environ, extra_context=context, mirrors=mirrors)
    return StackExpansion(rewrite_resolution(locked, mirrors), lock_notes, expansion)


class HostSession:
    """One manifest against one host: prepares everything locally, then talks to the agent."""

    def __init__(self, loaded: LoadedManifest, options: RunOptions | None = None,
                 transport_factory: TransportFactory = default_transport,
                 environ: dict[str, str] | None = None) -> None:
        self.loaded = loaded
        self.options = options or RunOptions()
        self.environ = environ
        self.transport_factory = transport_factory
        self.resolution: Resolution | None = None
        self.facts: Facts | None = None
        self.lock_notes: LockNotes | None = None
        # --mirrors is `lock`'s; plan and apply find the file through $PROVISION_MIRRORS or beside the manifest.
        self.mirrors_path = find_mirrors_file(loaded.path, environ=environ)
        self.mirrors = load_mirrors(self.mirrors_path)
        # Without a stack to resolve, expansion happens before any connection; with one, it waits for
        # the host's facts (a read-only call). Either way bad input is refused before any change.
        self._expansion: Expansion | None = (
            None if needs_resolution(loaded.manifest) else expand(loaded, environ, mirrors=self.mirrors)
        )

    @property
    def expansion(self) -> Expansion:
        if self._expansion is None:
            raise RuntimeError("the stack is expanded after preflight; call plan/apply first")
        return self._expansion

    @property
    def secrets(self) -> list[str]:
        return self._expansion.secrets if self._expansion else []

    def _prepare(self, client: AgentClient, host: str) -> Expansion:
        """Resolve the stack against the host's facts (once), then expand roles with the result."""
        if self._expansion is None:
            # The catalog, resolver and lock load only for stack manifests: a plain no-op stays fast.
            from provisioner.preflight import gather_facts, resolve_or_refuse

            self.facts = gather_facts(client, self.loaded.manifest)
            resolution = resolve_or_refuse(self.loaded.manifest, self.facts, host, self.loaded.source)
            stack = expand_stack(self.loaded, self.facts, resolution, self.mirrors, self.environ)
            self.resolution, self.lock_notes, self._expansion = stack.resolution, stack.lock_notes, stack.expansion
        return self._expansion

    def notes(self) -> list[str]:
        """What plan shows besides the resources: warnings, the mirrors in use, the lock, withheld tokens."""
        mirrors = [f"URLs rewritten by the mirrors in {self.mirrors_path}"] if self.mirrors_path else []
        lock = self.lock_notes.lines if self.lock_notes else []
        return [*self.warnings(), *mirrors, *lock, *(self._expansion.notes if self._expansion else [])]

    def warnings(self) -> list[str]:
        """The resolution's warnings every report repeats (a source build behind the unsupported-arch override)."""
        wheel = self.resolution.nunchaku if self.resolution else None
        return list(wheel.build.warnings) if wheel is not None and wheel.build is not None else []

    def _request(self, host: str) -> dict[str, Any]:
        manifest = self.loaded.manifest
        return {
            "root": manifest.target.root,
            "extra_roots": manifest.target.extra_roots,
            "options": {**self._options(), "prune": self.options.prune},
            "trusted": trusted_for_plan(self.options.ledger, host),
            "watch": watched_folders(manifest, self.expansion.resources),
            "manifest": {"name": manifest.name, "file": os.path.abspath(self.loaded.path), "provision": __version__},
            "lock": lock_request(self.options.lock_timeout),
            **self.expansion.payload(),
        }

    def _options(self) -> dict[str, bool]:
        return {"force": self.options.force, "deep": self.options.deep, "verbose": self.options.verbose}

    def _client(self, transport: Transport) -> AgentClient:
        target = self.loaded.manifest.target
        return AgentClient(transport, python=target.python, timeout=target.command_timeout)

    def plan(self) -> PlanReport:
        started = time.monotonic()
        with self.transport_factory(self.loaded, self.options) as transport:
            client = self._client(transport)
            self._prepare(client, transport.display)
            result = client.call("probe", self._request(transport.display))
            return PlanReport(transport.display, result["root"], self.loaded.manifest.name, result["resources"],
                              round(time.monotonic() - started, 3), self._origins(), self.notes(),
                              unmanaged_entries(result.get("unmanaged")))

    def apply(self, on_event: EventCallback | None = None, guard: ApplyGuard | None = None) -> ApplyReport:
        started = time.monotonic()
        with self.transport_factory(self.loaded, self.options) as transport:
            client = self._client(transport)
            try:
                self._prepare(client, transport.display)
                if self.lock_notes:
                    self.lock_notes.refuse_if_stale(transport.display)
                expect = guard.expect(self, transport.display) if guard is not None else None
                request, pushed = self._stage_downloads(client, transport, on_event)
                if expect is not None:
                    request["expect"] = expect
                request, wheels = self._push_built_wheels(client, transport, request, on_event)
                pushed += wheels
                result = client.call("apply", request, on_event)
                remember_apply(self.options.ledger, transport.display, request, result)
                self._fetch_built_wheels(transport, result, set(pushed), on_event)
            except BaseException:
                transport.finalize(False)
                raise
            report = ApplyReport(transport.display, result["root"], self.loaded.manifest.name, result["resources"],
                                 result["handlers"], result["reprobe"], result["generation"], result["failed"],
                                 round(time.monotonic() - started, 3), pushed=pushed, warnings=self.warnings())
            transport.finalize(report.ok)
            return report

    def _stage_downloads(self, client: AgentClient, transport: Transport,
                         on_event: EventCallback | None) -> tuple[dict[str, Any], list[str]]:
        """The apply request, with the host's missing downloads pushed from the controller cache when it is on."""
        request = self._request(transport.display)
        if self.options.download_cache is None:
            return request, []
        # Loaded only when the cache is on: a plain apply never pays for urllib.
        from provisioner.download_cache import DownloadCache
        from provisioner.download_push import stage_downloads

        cache = DownloadCache(self.options.download_cache)
        request, pushed = stage_downloads(client, transport, request, self.expansion, cache, on_event)
        return request, [p.id for p in pushed]

    def _push_built_wheels(self, client: AgentClient, transport: Transport, request: dict[str, Any],
                           on_event: EventCallback | None) -> tuple[dict[str, Any], list[str]]:
        """Wheels this host would build that the controller cache holds for the same build key: pushed and named
        as the resource's staged file, so the host places them instead of building."""
        if self.options.download_cache is None or not any(r.kind == "wheel_build" for r in self.expansion.resources):
            return request, []
        from provisioner.built_wheels import BuiltWheelCache, builds_of, push_wheels, wheels_to_push

        cache = BuiltWheelCache(self.options.download_cache)
        probed = client.call("probe", request)
        statuses = {r["id"]: r["status"] for r in probed["resources"]}
        pushes = wheels_to_push(builds_of(self.expansion.resources), statuses, cache)
        return push_wheels(transport, probed["root"], request, pushes, on_event), [b.id for b, _ in pushes]

    def _fetch_built_wheels(self, transport: Transport, result: dict[str, Any], pushed: set[str],
                            on_event: EventCallback | None) -> None:
        """Wheels this apply built go into the controller cache, for the next host with the same build key."""
        if self.options.download_cache is None or not any(r.kind == "wheel_build" for r in self.expansion.resources):
            return
        from provisioner.built_wheels import BuiltWheelCache, builds_of, fetch_wheel, wheels_to_fetch

        cache = BuiltWheelCache(self.options.download_cache)
        outcomes = {r["id"]: r["outcome"] for r in result["resources"]}
        reprobe = {r["id"]: r["status"] for r in result["reprobe"]}
        for build in wheels_to_fetch(builds_of(self.expansion.resources), outcomes, reprobe, pushed, cache):
            fetch_wheel(transport, result["root"], build, cache, on_event)

    def rollback(self, to: int | None = None, on_event: EventCallback | None = None) -> ApplyReport:
        """Re-apply generation `to` (default: the one before the last successful apply)."""
        started = time.monotonic()
        with self.transport_factory(self.loaded, self.options) as transport:
            client = self._client(transport)
            self._prepare(client, transport.display)
            root = self.loaded.manifest.target.root
            trusted = trusted_for_rollback(self.options.ledger, transport.display, root)
            request = {"root": root, "extra_roots": self.loaded.manifest.target.extra_roots,
                       "options": self._options(), "to": to,
                       "secrets": self.expansion.secret_values_by_key(), "trusted": trusted,
                       "lock": lock_request(self.options.lock_timeout)}
            result = client.call("rollback", request, on_event)
            remember_rollback(self.options.ledger, transport.display, trusted, result)
            return ApplyReport(transport.display, result["root"], self.loaded.manifest.name, result["resources"],
                               result["handlers"], result["reprobe"], result["generation"], result["failed"],
                               round(time.monotonic() - started, 3), rollback_to=result["rollback_to"])

    def _origins(self) -> dict[str, str]:
        return {r.id: r.origin for r in self.expansion.resources}
