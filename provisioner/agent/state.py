"""Generations: one JSON record per apply that changed something, under <root>/.provision/."""

from __future__ import annotations

import json
import os

from . import leftovers, masking
from .protocol import ResourceFailure
from .statedir import read_text, state_path

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

GENERATIONS = "generations"


def _dir(state_dir: str) -> str:
    return state_path(state_dir, GENERATIONS)


def list_generations(state_dir: str) -> List[int]:
    try:
        names = os.listdir(_dir(state_dir))
    except OSError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def path_of(state_dir: str, number: int) -> str:
    return state_path(state_dir, GENERATIONS, "%06d.json" % number)


def read(state_dir: str, number: int) -> Optional[Dict[str, Any]]:
    text = read_text(path_of(state_dir, number))
    try:
        record = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def latest(state_dir: str) -> Optional[Dict[str, Any]]:
    numbers = list_generations(state_dir)
    return read(state_dir, numbers[-1]) if numbers else None


def converged_digests(state_dir: str) -> Dict[str, str]:
    """Resource id -> spec digest as of the last recorded apply that converged it."""
    record = latest(state_dir)
    return dict(record.get("converged", {})) if record else {}


#: A taken number is skipped, never overwritten; this many in a row taken means something is wrong.
MAX_TAKEN_NUMBERS = 1000


def write(state_dir: str, record: Dict[str, Any]) -> int:
    """Record the next generation. The caller holds the root's lock, so the number is free; creating the
    file exclusively (a hard link, which fails on an existing name) guards against a writer that does not
    take the lock: a number is never written twice, and readers only ever see a whole file."""
    import tempfile

    folder = _dir(state_dir)
    os.makedirs(folder, exist_ok=True)
    numbers = list_generations(state_dir)
    first = (numbers[-1] + 1) if numbers else 1
    fd, tmp = tempfile.mkstemp(prefix=leftovers.temp_prefix(), dir=folder)  # a killed run's is swept
    try:
        os.fchmod(fd, 0o600)
        for number in range(first, first + MAX_TAKEN_NUMBERS):
            data = json.dumps(masking.mask(dict(record, generation=number)), indent=2, sort_keys=True).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            try:
                os.link(tmp, os.path.join(folder, "%06d.json" % number))
                return number
            except FileExistsError:
                continue
        raise ResourceFailure("generations %d to %d in %s already exist; nothing recorded"
                              % (first, first + MAX_TAKEN_NUMBERS - 1, folder))
    finally:
        os.close(fd)
        os.unlink(tmp)
