"""Health gates of a rollout: checks run on each host after its apply, and a controller program between batches.

The host check is pluggable (`HostCheck`): the default passes when the apply converged (its re-probe
found 0 changes) and every `rollout.checks` program exits 0 on the host.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from provisioner.engine import ApplyReport
from provisioner.errors import ProvisionError
from provisioner.fleet.inventory import CheckSpec, FleetError, GateSpec
from provisioner.fleet.sessions import PreparedHost
from provisioner.templating import render_value

# Runs argv inside the target root without building a shell string from values: root and argv are arguments.
_IN_ROOT = 'cd -- "$1" && shift && exec "$@"'
TAIL = 2000


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    ok: bool
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


HostCheck = Callable[[PreparedHost, ApplyReport], list[CheckOutcome]]


def check_argv(check: CheckSpec, prepared: PreparedHost, root: str) -> list[str]:
    context = {**prepared.session.loaded.manifest.vars, "host": prepared.name, "root": root}
    try:
        rendered = render_value(list(check.argv), context)
    except jinja2.TemplateError as exc:
        raise FleetError(f"rollout.checks {check.name} for host {prepared.name}: {exc}; "
                         "define the variable under the host's or a group's vars:") from None
    return [str(item) for item in rendered]


class RolloutChecks:
    """The default host check: converged, then each `rollout.checks` program in the target root."""

    def __init__(self, checks: Sequence[CheckSpec]) -> None:
        self.checks = list(checks)

    def __call__(self, prepared: PreparedHost, report: ApplyReport) -> list[CheckOutcome]:
        converged = not report.unconverged
        outcomes = [CheckOutcome("converged", converged, "" if converged else
                                 "re-probe still differs: " + ", ".join(r["id"] for r in report.unconverged))]
        for check in self.checks:
            outcomes.append(self._run(check, prepared, report.root))
        return outcomes

    def _run(self, check: CheckSpec, prepared: PreparedHost, root: str) -> CheckOutcome:
        argv = check_argv(check, prepared, root)
        try:
            done = prepared.transport.run(["sh", "-c", _IN_ROOT, "sh", root, *argv], timeout=check.timeout)
        except ProvisionError as exc:
            return CheckOutcome(check.name, False, str(exc))
        if done.ok:
            return CheckOutcome(check.name, True)
        output = (done.stderr.strip() or done.stdout.strip())[-TAIL:]
        return CheckOutcome(check.name, False, prepared.mask(f"exit {done.returncode}" + (f": {output}" if output
                                                                                         else "")))


def run_gate(gate: GateSpec, batch_number: int, hosts: Sequence[str]) -> str | None:
    """Run the between-batches gate on the controller; None when it passed, else why not."""
    env = dict(os.environ, PROVISION_FLEET_BATCH=str(batch_number), PROVISION_FLEET_HOSTS=",".join(hosts))
    try:
        done = subprocess.run(gate.argv, env=env, capture_output=True, text=True, timeout=gate.timeout, check=False)
    except FileNotFoundError:
        return f"rollout.gate: {gate.argv[0]} not found on the controller"
    except subprocess.TimeoutExpired:
        return f"rollout.gate: {gate.argv[0]} did not finish within {gate.timeout:g}s"
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip())[-TAIL:]
        return f"rollout.gate exited {done.returncode} after batch {batch_number}" + (f": {output}" if output else "")
    return None
