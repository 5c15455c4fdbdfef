"""Fleet apply: hosts in rollout batches, a bounded number at once, with canary, max-fail, gates, rollback, resume.

Each host keeps one connection for its apply, checks and rollback. A batch finishes before the next
one starts (as Ansible's `serial`); once a batch's failures already decide an abort, hosts of that batch
that have not started yet are not started.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from provisioner.agent_client import AgentClient
from provisioner.controller_process import ControllerProcess
from provisioner.engine import ApplyReport, RunOptions
from provisioner.errors import ProvisionError, TransportError
from provisioner.fleet.gates import HostCheck, RolloutChecks, run_gate
from provisioner.fleet.inventory import FleetHost, Inventory
from provisioner.fleet.preflight import PreflightResult, preflight
from provisioner.fleet.results import (
    FAILED,
    NOT_RUN,
    OK,
    SKIPPED,
    UNREACHABLE,
    FleetApplyResult,
    HostLog,
    HostResult,
    ProgressCallback,
)
from provisioner.fleet.rollout import Batch, plan_batches, should_abort
from provisioner.fleet.sessions import PreparedHost, prepare_hosts
from provisioner.fleet.state import RolloutState, state_path
from provisioner.ledger import RUNNING, Ledger, LedgerEntry, new_run_id

#: (phase, message) for one host: written to its log and shown as progress.
NoteCallback = Callable[[str, str], None]


@dataclass
class FleetOptions:
    forks: int | None = None
    resume: bool = False
    run: RunOptions = field(default_factory=RunOptions)
    environ: dict[str, str] | None = None


def _quiet(host: str, phase: str, message: str) -> None:
    """The default progress callback: nothing on screen (per-host logs still get everything)."""


class FleetApply:
    def __init__(self, inventory: Inventory, hosts: Sequence[FleetHost], ledger: Ledger,
                 options: FleetOptions | None = None, on_progress: ProgressCallback = _quiet,
                 host_check: HostCheck | None = None) -> None:
        self.inventory = inventory
        self.rollout = inventory.rollout
        self.options = options or FleetOptions()
        self.ledger = ledger
        self.progress = on_progress
        self.host_check = host_check or RolloutChecks(self.rollout.checks)
        # A --download-cache given on the command line wins over the inventory's download_cache.
        run = self.options.run
        if run.download_cache is None and inventory.download_cache is not None:
            run = dataclasses.replace(run, download_cache=inventory.download_cache)
        # Everything is expanded here, before any host is contacted.
        self.prepared = prepare_hosts(hosts, run, self.options.environ)
        self.run_id = new_run_id()
        self.state_dir = ledger.path.parent
        self.log_dir = self.state_dir / "logs" / self.run_id
        self._stop = threading.Event()
        self._preflight = PreflightResult()

    def run(self) -> FleetApplyResult:
        started = time.monotonic()
        path = state_path(self.state_dir, self.inventory.path)
        state = (RolloutState.resume if self.options.resume else RolloutState.start)(path, self.inventory.path,
                                                                                      self.run_id)
        results: list[HostResult] = []
        pending: list[PreparedHost] = []
        for prepared in self.prepared:
            if self.options.resume and state.finished(prepared.name, prepared.digest):
                results.append(HostResult(prepared.name, 0, SKIPPED, manifest=prepared.session.loaded.manifest.name,
                                          error="finished in an earlier run of this rollout"))
                self.progress(prepared.name, "done", "skipped: finished in an earlier run")
            else:
                pending.append(prepared)
        canary = None if state.canary_passed else self.rollout.canary
        batches = plan_batches(pending, self.rollout.serial, canary)
        forks = self.options.forks or self.rollout.forks
        aborted: str | None = None
        pool = ThreadPoolExecutor(max_workers=forks, thread_name_prefix="fleet")
        try:
            # Every host is planned before the first change: a misfit stops the rollout before the canary.
            self.progress("", "batch", f"preflight: planning {len(pending)} hosts")
            self._preflight = preflight(pending, forks, self.progress, self.rollout.rollback_on_failure)
            aborted = self._preflight.abort_reason()
            for index, batch in enumerate(batches):
                if aborted:
                    results += [self._not_run(p, batch) for p in batch.hosts]
                    continue
                batch_results = self._run_batch(pool, batch, state, len(batches))
                results += batch_results
                aborted = self._verdict(batch, batch_results)
                if aborted is None and batch.canary:
                    state.mark("running", canary_passed=True)
                if aborted is None and index + 1 < len(batches):
                    aborted = self._between_batches(batch)
            pool.shutdown(wait=True)
        except BaseException:
            # Interrupted (Ctrl-C): hosts not yet started stay untouched; finished ones are in the state file.
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            state.mark("interrupted")
            raise
        finally:
            for prepared in self.prepared:
                prepared.close()
        state.mark("aborted" if aborted else "finished")
        order = {p.name: i for i, p in enumerate(self.prepared)}
        results.sort(key=lambda r: order[r.name])
        return FleetApplyResult(self.run_id, str(self.inventory.path), results, round(time.monotonic() - started, 3),
                                aborted, state.resumed_from, str(path))

    def _not_run(self, prepared: PreparedHost, batch: Batch[PreparedHost]) -> HostResult:
        manifest = prepared.session.loaded.manifest.name
        refused = self._preflight.refused.get(prepared.name)
        if refused is not None:
            return HostResult(prepared.name, batch.number, FAILED, batch.canary, manifest,
                              error=f"preflight: {refused}")
        return HostResult(prepared.name, batch.number, NOT_RUN, batch.canary, manifest)

    # -- batches -------------------------------------------------------------------------------------------

    def _run_batch(self, pool: ThreadPoolExecutor, batch: Batch[PreparedHost], state: RolloutState,
                   total: int) -> list[HostResult]:
        label = f"batch {batch.number}/{total}" + (" (canary)" if batch.canary else "")
        self.progress("", "batch", f"{label}: {', '.join(p.name for p in batch.hosts)}")
        self._stop.clear()
        failed = 0
        lock = threading.Lock()

        def finished(future: Future[HostResult]) -> None:
            nonlocal failed
            result = future.result()
            if result.failed:
                with lock:
                    failed += 1
                    if should_abort(failed, len(batch.hosts), batch.canary, self.rollout.max_fail_percentage):
                        self._stop.set()

        futures = []
        for prepared in batch.hosts:
            future = pool.submit(self._run_host, prepared, batch, state)
            future.add_done_callback(finished)
            futures.append(future)
        return [f.result() for f in futures]

    def _verdict(self, batch: Batch[PreparedHost], results: list[HostResult]) -> str | None:
        failed = [r.name for r in results if r.failed]
        if not should_abort(len(failed), len(batch.hosts), batch.canary, self.rollout.max_fail_percentage):
            return None
        if batch.canary:
            return f"canary batch failed on {', '.join(failed)}; no other host was touched"
        limit = self.rollout.max_fail_percentage
        rule = (f"more than max_fail_percentage {limit:g}%" if limit is not None else "every host of the batch")
        return (f"batch {batch.number}: {len(failed)} of {len(batch.hosts)} hosts failed ({', '.join(failed)}), "
                f"{rule}; the remaining batches were not started")

    def _between_batches(self, batch: Batch[PreparedHost]) -> str | None:
        if self.rollout.pause_seconds:
            self.progress("", "gate", f"pausing {self.rollout.pause_seconds:g}s before the next batch")
            time.sleep(self.rollout.pause_seconds)
        if self.rollout.gate is None:
            return None
        self.progress("", "gate", f"running the gate after batch {batch.number}")
        return run_gate(self.rollout.gate, batch.number, [p.name for p in batch.hosts])

    # -- one host ------------------------------------------------------------------------------------------

    def _run_host(self, prepared: PreparedHost, batch: Batch[PreparedHost], state: RolloutState) -> HostResult:
        manifest = prepared.session.loaded.manifest.name
        if self._stop.is_set():
            self.progress(prepared.name, "done", "not started: the batch already failed")
            return HostResult(prepared.name, batch.number, NOT_RUN, batch.canary, manifest)
        started = time.time()
        row = self.ledger.start(LedgerEntry(self.run_id, started, 0, "apply", manifest, prepared.name, RUNNING, -1),
                                ControllerProcess.current())
        log = HostLog(self.log_dir / f"{prepared.name}.log")
        result = HostResult(prepared.name, batch.number, FAILED, batch.canary, manifest, log=str(log.path))

        def note(phase: str, message: str) -> None:
            message = prepared.mask(message)
            log.write(phase, message)
            self.progress(prepared.name, phase, message)

        try:
            note("start", f"{prepared.target.connection} root {prepared.target.root}")
            self._apply_and_check(prepared, result, note)
        except Exception as exc:  # a bug must not take the other hosts down with it; it is logged in full
            result.status, result.error = FAILED, f"internal error: {exc!r}"
            note("error", result.error)
        finally:
            result.seconds = round(time.time() - started, 3)
            note("done", _done_line(result))
            log.close()
            self._record(prepared, result, started, state, row)
        return result

    def _apply_and_check(self, prepared: PreparedHost, result: HostResult, note: NoteCallback) -> None:
        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "log":
                note("log", str(event.get("message", "")))
            elif event.get("event") == "progress" and event.get("phase") in ("applying", "failed"):
                detail = f": {event['error']}" if event.get("error") else ""
                note(str(event["phase"]), f"{event.get('id')}{detail}")
            elif event.get("event") == "progress" and event.get("phase") in ("caching", "pushed", "waiting"):
                note(str(event["phase"]), str(event.get("message", "")))

        try:
            report = prepared.session.apply(on_event)
        except TransportError as exc:
            result.status, result.error = UNREACHABLE, prepared.mask(str(exc))
            return
        except ProvisionError as exc:
            result.error = prepared.mask(str(exc))
            self._maybe_rollback(prepared, result, None, note)
            return
        result.generation = report.generation
        result.changed = sum(1 for r in report.resources if r["outcome"] == "changed")
        if not report.ok:
            failures = [f"{r['id']}: {r.get('error') or r['outcome']}" for r in report.resources
                        if r["outcome"] == "failed"] + [f"{h['name']}: {h['error']}" for h in report.handlers
                                                        if h.get("error")]
            failures += [f"{r['id']} still differs after apply" for r in report.unconverged]
            result.error = prepared.mask("; ".join(failures) or "apply failed")
            self._maybe_rollback(prepared, result, report, note)
            return
        try:
            result.checks = self.host_check(prepared, report)
        except ProvisionError as exc:
            result.error = prepared.mask(str(exc))
            self._maybe_rollback(prepared, result, report, note)
            return
        for check in result.checks:
            note("check", f"{check.name}: {'pass' if check.ok else 'FAIL ' + check.detail}")
        bad = [c for c in result.checks if not c.ok]
        if bad:
            result.error = "check failed: " + "; ".join(f"{c.name} ({c.detail})" for c in bad)
            self._maybe_rollback(prepared, result, report, note)
            return
        result.status = OK

    def _maybe_rollback(self, prepared: PreparedHost, result: HostResult, report: ApplyReport | None,
                        note: NoteCallback) -> None:
        if not self.rollout.rollback_on_failure:
            return
        try:
            target = self._previous_generation(prepared, report)
            if target is None:
                result.rollback = {"ok": False, "to": None, "generation": None,
                                   "error": "nothing to roll back: this run recorded no generation"}
                note("rollback", result.rollback["error"])
                return
            if target == 0:
                result.rollback = {"ok": False, "to": None, "generation": None,
                                   "error": "no earlier successful generation on the host to return to"}
                note("rollback", result.rollback["error"])
                return
            note("rollback", f"returning to generation {target}")
            back = prepared.session.rollback(to=target)
            result.rollback = {"ok": back.ok, "to": target, "generation": back.generation,
                               "error": None if back.ok else "the rollback did not converge"}
            note("rollback", f"{'done' if back.ok else 'FAILED'}: generation {back.generation}")
        except ProvisionError as exc:
            result.rollback = {"ok": False, "to": None, "generation": None, "error": prepared.mask(str(exc))}
            note("rollback", f"FAILED: {result.rollback['error']}")

    def _previous_generation(self, prepared: PreparedHost, report: ApplyReport | None) -> int | None:
        """The last successful generation before this run's: None if this run recorded none, 0 if none exists."""
        target = prepared.target
        records = [g for g in AgentClient(prepared.transport, python=target.python).call(
            "generations", {"root": target.root})["generations"] if g]
        if report is not None:
            newest = report.generation
        else:  # the apply broke off: its generation, if it wrote one, is the newest failed record
            newest = records[-1]["generation"] if records and records[-1].get("status") != "ok" else None
            before = self._preflight.newest_generation.get(prepared.name)
            if newest is not None and before is not None and newest <= before:
                newest = None  # that record is an earlier run's: this run changed nothing to roll back
        if newest is None:
            return None
        earlier = [g["generation"] for g in records if g["generation"] < newest and g.get("status") == "ok"]
        return earlier[-1] if earlier else 0

    def _record(self, prepared: PreparedHost, result: HostResult, started: float, state: RolloutState,
                row: int) -> None:
        state.record_host(prepared.name, result.status, prepared.digest, result.generation, self.run_id)
        status = "rolled-back" if result.rollback and result.rollback.get("ok") else result.status
        summary = {"fleet": str(self.inventory.path), "batch": result.batch, "canary": result.canary,
                   "connection": prepared.target.connection, "error": result.error, "rollback": result.rollback,
                   "checks": [c.as_json() for c in result.checks]}
        self.ledger.finish(row, LedgerEntry(self.run_id, started, result.seconds, "apply", result.manifest,
                                            prepared.name, status, 0 if result.status == OK else 1, result.changed,
                                            result.generation, summary))


def _done_line(result: HostResult) -> str:
    parts = [result.status, f"{result.changed} changed"]
    if result.generation:
        parts.append(f"gen {result.generation}")
    if result.rollback:
        rollback = result.rollback
        parts.append(f"rolled back to gen {rollback['to']}" if rollback.get("ok") else
                     f"rollback failed: {rollback.get('error')}")
    parts.append(f"{result.seconds:.2f}s")
    line = ", ".join(parts)
    return line + (f" — {result.error}" if result.error else "")
