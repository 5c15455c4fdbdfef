"""Generations: one JSON record per apply that changed something, under <root>/.provision/."""

from __future__ import annotations

import json
import os

from . import masking
from .fsutil import atomic_write
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


def write(state_dir: str, record: Dict[str, Any]) -> int:
    numbers = list_generations(state_dir)
    number = (numbers[-1] + 1) if numbers else 1
    record = dict(record, generation=number)
    data = json.dumps(masking.mask(record), indent=2, sort_keys=True).encode("utf-8")
    atomic_write(os.path.join(_dir(state_dir), "%06d.json" % number), data, 0o600)
    return number
