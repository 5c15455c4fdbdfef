"""Lock files and mirrors: pin what a manifest resolved to, and reach upstreams through local copies."""

from provisioner.lock.create import LockSources, create_lock
from provisioner.lock.errors import LockError, LockFileError, MirrorsError, StaleLockError
from provisioner.lock.mirrors import Mirrors, find_mirrors_file, load_mirrors, rewrite_resolution
from provisioner.lock.model import Lock, dump_lock, lock_path_for, read_lock, write_lock
from provisioner.lock.overlay import apply_lock, lock_disagreements
from provisioner.lock.use import LockNotes, use_lock

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
