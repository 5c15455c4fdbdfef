"""Lock files and mirrors: pin what a manifest resolved to, and reach upstreams through local copies.

Names load on first use: every plan reads the mirrors (`provisioner.lock.mirrors`), but only stack
manifests need the resolver, the Hub client and the lock format behind the other names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provisioner.lock.create import LockSources, create_lock
    from provisioner.lock.errors import LockError, LockFileError, MirrorsError, StaleLockError
    from provisioner.lock.mirrors import Mirrors, find_mirrors_file, load_mirrors, rewrite_resolution
    from provisioner.lock.model import Lock, dump_lock, lock_path_for, read_lock, write_lock
    from provisioner.lock.overlay import apply_lock, lock_disagreements
    from provisioner.lock.use import LockNotes, use_lock

_HOMES = {
    "LockSources": "create", "create_lock": "create",
    "LockError": "errors", "LockFileError": "errors", "MirrorsError": "errors", "StaleLockError": "errors",
    "Mirrors": "mirrors", "find_mirrors_file": "mirrors", "load_mirrors": "mirrors", "rewrite_resolution": "mirrors",
    "Lock": "model", "dump_lock": "model", "lock_path_for": "model", "read_lock": "model", "write_lock": "model",
    "apply_lock": "overlay", "lock_disagreements": "overlay",
    "LockNotes": "use", "use_lock": "use",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "Lock",
    "LockError",
    "LockFileError",
    "LockNotes",
    "LockSources",
    "Mirrors",
    "MirrorsError",
    "StaleLockError",
    "apply_lock",
    "create_lock",
    "dump_lock",
    "find_mirrors_file",
    "load_mirrors",
    "lock_disagreements",
    "lock_path_for",
    "read_lock",
    "rewrite_resolution",
    "use_lock",
    "write_lock",
]
