"""How plan/apply use a manifest's lock: one call after preflight (the mirrors apply after expansion)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from provisioner.lock.errors import StaleLockError
from provisioner.lock.model import lock_path_for, manifest_digest, read_lock
from provisioner.lock.overlay import apply_lock, facts_difference, lock_disagreements
from provisioner.manifest.loader import LoadedManifest
from provisioner.resolve.result import Resolution


@dataclass(frozen=True)
class LockNotes:
    """What plan shows about the lock; `disagreements` make apply refuse."""

    lock: Path | None = None
    notes: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return [*self.notes, *self.disagreements]

    def refuse_if_stale(self, host: str) -> None:
        """Apply must not pick between the manifest and its lock on the user's behalf."""
        if self.disagreements:
            raise StaleLockError("\n".join([
                f"{host}: the manifest no longer matches its lock {self.lock}; nothing was changed.",
                *(f"  {line}" for line in self.disagreements),
            ]))


def use_lock(loaded: LoadedManifest, resolution: Resolution) -> tuple[Resolution, LockNotes]:
    """Overlay MANIFEST.lock (when there is one) onto a fresh resolution; URLs stay the upstream ones."""
    lock_path = lock_path_for(loaded.path)
    notes: list[str] = []
    disagreements: list[str] = []
    if lock_path.is_file() and resolution.ok:
        lock = read_lock(lock_path)
        disagreements = [f"{lock_path.name}: {line}" for line in lock_disagreements(resolution, lock)]
        resolution = apply_lock(resolution, lock)
        notes.append(f"pinned by {lock_path}")
        if lock.manifest.digest != manifest_digest(loaded.manifest) and not disagreements:
            notes.append(f"{lock_path.name}: the manifest changed since it was locked, but its pins still fit; "
                         "`provision lock` records the change")
        host = facts_difference(resolution, lock)
        if host is not None and not disagreements:
            notes.append(f"{lock_path.name}: {host}; its pins still fit")
    return resolution, LockNotes(lock_path if lock_path.is_file() else None, notes, disagreements)
