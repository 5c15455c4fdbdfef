"""What a fleet run produced, host by host, plus the per-host log files it writes on the controller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.engine import PlanReport
from provisioner.fleet.gates import CheckOutcome

# Host statuses of an apply. `failed` and `unreachable` count against max_fail_percentage.
OK, FAILED, UNREACHABLE, NOT_RUN, SKIPPED = "ok", "failed", "unreachable", "not-run", "skipped"
FAILURES = (FAILED, UNREACHABLE)
HOST_STATUSES = (OK, FAILED, UNREACHABLE, NOT_RUN, SKIPPED)

#: (host, phase, message): phases are start, applying, log, check, rollback, done, batch, gate.
ProgressCallback = Callable[[str, str, str], None]


@dataclass
class HostResult:
    name: str
    batch: int
    status: str
    canary: bool = False
    manifest: str = ""
    changed: int = 0
    generation: int | None = None
    seconds: float = 0.0
    error: str | None = None
    checks: list[CheckOutcome] = field(default_factory=list)
    rollback: dict[str, Any] | None = None
    log: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILURES

    def as_json(self) -> dict[str, Any]:
        return {"host": self.name, "batch": self.batch, "canary": self.canary, "status": self.status,
                "manifest": self.manifest, "changed": self.changed, "generation": self.generation,
                "seconds": self.seconds, "error": self.error, "checks": [c.as_json() for c in self.checks],
                "rollback": self.rollback, "log": self.log}


@dataclass
class FleetApplyResult:
    run_id: str
    inventory: str
    hosts: list[HostResult]
    seconds: float
    aborted: str | None = None
    resumed_from: str | None = None
    state_file: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for h in self.hosts if h.status == status)

    def exit_code(self) -> int:
        return 1 if self.aborted or any(h.failed for h in self.hosts) else 0

    def as_json(self) -> dict[str, Any]:
        counts = dict.fromkeys(HOST_STATUSES, 0)
        for host in self.hosts:
            counts[host.status] = counts.get(host.status, 0) + 1
        return {"run_id": self.run_id, "inventory": self.inventory, "seconds": self.seconds, "aborted": self.aborted,
                "resumed_from": self.resumed_from, "state_file": self.state_file, "summary": counts,
                "hosts": [h.as_json() for h in self.hosts]}


@dataclass
class HostPlan:
    """One host's drift (or why it could not be planned) and the GPU facts seen on it."""

    name: str
    status: str  # ok | drift | error | unreachable
    manifest: str = ""
    connection: str = ""
    report: PlanReport | None = None
    areas: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class FleetPlanResult:
    run_id: str
    inventory: str
    hosts: list[HostPlan]
    seconds: float

    def exit_code(self) -> int:
        if any(h.status in ("error", "unreachable") for h in self.hosts):
            return 1
        return 2 if any(h.status == "drift" for h in self.hosts) else 0


class HostLog:
    """Append-only text log of one host's part in a fleet run (masked by the caller)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def write(self, phase: str, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            for line in (message.splitlines() or [""]):
                self._handle.write(f"{stamp} {phase:<9} {line}\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()
