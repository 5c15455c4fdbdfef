"""Rollout state on the controller, next to the ledger: which hosts finished, so `--resume` can skip them."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.fleet.inventory import FleetError

FINISHED = "ok"


def state_path(state_dir: Path, inventory: Path) -> Path:
    """One file per inventory (by absolute path), so two fleets never resume each other's rollouts."""
    resolved = str(inventory.resolve())
    tag = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:12]
    return state_dir / "rollouts" / f"{inventory.stem}-{tag}.json"


@dataclass
class RolloutState:
    path: Path
    inventory: str
    run_id: str
    status: str = "running"
    canary_passed: bool = False
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    resumed_from: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(cls, path: Path, inventory: Path, run_id: str) -> RolloutState:
        state = cls(path, str(inventory.resolve()), run_id)
        state.save()
        return state

    @classmethod
    def resume(cls, path: Path, inventory: Path, run_id: str) -> RolloutState:
        """Continue the rollout recorded at `path` under a new run id."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FleetError(f"no rollout of {inventory} to resume (looked for {path}); run without --resume") from None
        except (OSError, ValueError) as exc:
            raise FleetError(f"rollout state {path} is unreadable ({exc}); delete it and run without --resume") \
                from None
        state = cls(path, str(inventory.resolve()), run_id, status="running",
                    canary_passed=bool(data.get("canary_passed")), hosts=dict(data.get("hosts") or {}),
                    resumed_from=str(data.get("run_id")))
        state.save()
        return state

    def finished(self, host: str, digest: str) -> bool:
        """The host converged in an earlier run of this rollout, to exactly what it would get now."""
        record = self.hosts.get(host) or {}
        return record.get("status") == FINISHED and record.get("digest") == digest

    def record_host(self, host: str, status: str, digest: str, generation: int | None, run_id: str) -> None:
        with self._lock:
            self.hosts[host] = {"status": status, "digest": digest, "generation": generation, "run_id": run_id,
                                "time": time.time()}
            self._save_locked()

    def mark(self, status: str, canary_passed: bool | None = None) -> None:
        with self._lock:
            self.status = status
            if canary_passed is not None:
                self.canary_passed = canary_passed
            self._save_locked()

    def save(self) -> None:
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        document = {"inventory": self.inventory, "run_id": self.run_id, "status": self.status,
                    "canary_passed": self.canary_passed, "started": self.started, "resumed_from": self.resumed_from,
                    "hosts": self.hosts}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Atomic: a rollout killed mid-write must still be resumable.
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".rollout-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=2, sort_keys=True)
            os.replace(temp, self.path)
        except OSError as exc:
            raise FleetError(f"cannot write rollout state {self.path}: {exc}; check the ledger directory") from None
