"""Fleet plan: every host's drift and GPU facts, gathered in parallel over one connection per host."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from provisioner.agent_client import AgentClient
from provisioner.errors import ProvisionError, TransportError
from provisioner.fleet.areas import areas_of, gpu_summary
from provisioner.fleet.inventory import FleetHost, Inventory
from provisioner.fleet.results import FleetPlanResult, HostPlan, ProgressCallback
from provisioner.fleet.runner import FleetOptions
from provisioner.fleet.sessions import PreparedHost, prepare_hosts
from provisioner.ledger import Ledger, LedgerEntry, new_run_id
from provisioner.stack import needs_resolution


class FleetPlan:
    def __init__(self, inventory: Inventory, hosts: Sequence[FleetHost], ledger: Ledger,
                 options: FleetOptions | None = None, on_progress: ProgressCallback | None = None) -> None:
        self.inventory = inventory
        self.options = options or FleetOptions()
        self.ledger = ledger
        self.progress = on_progress
        self.prepared = prepare_hosts(hosts, self.options.run, self.options.environ)
        self.run_id = new_run_id()

    def run(self) -> FleetPlanResult:
        started = time.monotonic()
        forks = self.options.forks or self.inventory.rollout.forks
        try:
            with ThreadPoolExecutor(max_workers=forks, thread_name_prefix="fleet-plan") as pool:
                plans = list(pool.map(self._plan_host, self.prepared))
        finally:
            for prepared in self.prepared:
                prepared.close()
        return FleetPlanResult(self.run_id, str(self.inventory.path), plans, round(time.monotonic() - started, 3))

    def _plan_host(self, prepared: PreparedHost) -> HostPlan:
        started = time.time()
        manifest = prepared.session.loaded.manifest
        plan = HostPlan(prepared.name, "error", manifest.name, manifest.target.connection)
        try:
            report = prepared.session.plan()
            # A stack manifest's plan already gathered the facts; others need one more (read-only) call.
            facts = (prepared.session.facts.model_dump(mode="json") if prepared.session.facts is not None else
                     AgentClient(prepared.transport, python=manifest.target.python).call(
                         "facts", {"root": manifest.target.root, "venv": manifest.python.venv}))
        except TransportError as exc:
            plan.status, plan.error = "unreachable", prepared.mask(str(exc))
        except ProvisionError as exc:
            plan.error = prepared.mask(str(exc))
        else:
            plan.report = report
            plan.areas = _group_by_area(report.resources, areas_of(prepared.session.expansion.resources))
            plan.gpu = gpu_summary(facts, manifest.gpu.model_dump(), manifest.cuda.min_driver, manifest.cuda.version,
                                   needs_resolution(manifest))
            if report.errors or plan.gpu["problems"]:
                plan.error = "; ".join([*(f"{r['id']}: {r.get('error')}" for r in report.errors),
                                        *plan.gpu["problems"]])
            else:
                plan.status = "drift" if report.pending else "ok"
        plan.seconds = round(time.time() - started, 3)
        if self.progress:
            pending = len(plan.report.pending) if plan.report else 0
            self.progress(plan.name, "done", f"{plan.status}" + (f", {pending} pending" if pending else "")
                          + (f" — {plan.error}" if plan.error else ""))
        self._record(plan, started)
        return plan

    def _record(self, plan: HostPlan, started: float) -> None:
        exit_code = {"ok": 0, "drift": 2}.get(plan.status, 1)
        pending = len(plan.report.pending) if plan.report else 0
        summary = {"fleet": str(self.inventory.path), "connection": plan.connection, "error": plan.error,
                   "areas": {area: sum(1 for r in rows if r["status"] not in ("ok", "kept"))
                             for area, rows in plan.areas.items()}}
        self.ledger.record(LedgerEntry(self.run_id, started, plan.seconds, "plan", plan.manifest, plan.name,
                                       plan.status if plan.status != "error" else "failed", exit_code, pending,
                                       None, summary))


def _group_by_area(rows: list[dict[str, Any]], areas: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(areas.get(row["id"], "other"), []).append(row)
    return grouped
