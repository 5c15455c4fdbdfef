"""What a saved plan depends on, fingerprinted: the input files (manifest and its bases, roles, templates,
catalog, lock, mirrors) and the host facts the resolution read."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from provisioner.lock.model import lock_path_for
from provisioner.manifest.loader import LoadedManifest
from provisioner.role_expansion import role_search_path
from provisioner.templating import package_templates_dir

#: Facts that move on their own (free memory and disk, GPU memory in use): a plan does not depend on them.
VOLATILE_FACTS = ("memory_available_bytes", "disk_free_bytes")
#: A folder of roles or templates bigger than this is not hashed file by file (it is not a role folder).
MAX_FILES_PER_FOLDER = 2000


def input_files(loaded: LoadedManifest, mirrors_path: Path | None) -> dict[str, str]:
    """sha256 of every file that expansion may read, by absolute path; '' for an expected file that is absent."""
    files: dict[str, str] = {}
    for path in _manifest_chain(loaded.path):
        files[str(path)] = _sha256(path)
    for lock_or_mirrors in (lock_path_for(loaded.path), mirrors_path):
        if lock_or_mirrors is not None:
            files[str(lock_or_mirrors.resolve())] = _sha256(lock_or_mirrors)
    folders = [*role_search_path(loaded), loaded.directory / "templates", package_templates_dir(),
               Path(str(resources.files("provisioner.catalog")))]
    for folder in folders:
        for path in _files_under(folder):
            files[str(path)] = _sha256(path)
    return files


def changed_inputs(planned: dict[str, str], now: dict[str, str]) -> list[str]:
    """One line per input file that changed, appeared or went away since the plan."""
    lines = []
    for path in sorted(set(planned) | set(now)):
        before, after = planned.get(path), now.get(path)
        if before == after:
            continue
        if not before:
            lines.append(f"{path}: added since the plan")
        elif not after:
            lines.append(f"{path}: removed since the plan")
        else:
            lines.append(f"{path}: changed since the plan")
    return lines


def stable_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts without the values that change from minute to minute."""
    kept = {k: v for k, v in facts.items() if k not in VOLATILE_FACTS}
    nvidia = dict(kept.get("nvidia") or {})
    if nvidia.get("gpus"):
        nvidia["gpus"] = [{k: v for k, v in gpu.items() if k != "memory_used_mib"} for gpu in nvidia["gpus"]]
    kept["nvidia"] = nvidia
    return kept


def changed_facts(planned: Any, now: Any, where: str = "") -> list[str]:
    """'field: old -> new' for each fact that differs (nested fields by dotted path)."""
    if isinstance(planned, dict) and isinstance(now, dict):
        lines: list[str] = []
        for key in sorted(set(planned) | set(now)):
            lines += changed_facts(planned.get(key), now.get(key), f"{where}.{key}" if where else key)
        return lines
    if planned != now:
        return [f"{where or 'facts'}: {_short(planned)} -> {_short(now)}"]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _manifest_chain(path: Path) -> list[Path]:
    """The manifest and every base it extends (the loader has already refused cycles and bad names)."""
    seen: list[Path] = []
    pending = [path.resolve()]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.append(current)
        try:
            data = yaml.safe_load(current.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        bases = data.get("extends") if isinstance(data, dict) else None
        for base in [bases] if isinstance(bases, str) else bases if isinstance(bases, list) else []:
            if isinstance(base, str):
                pending.append((current.parent / base).resolve())
    return seen


def _files_under(folder: Path) -> Iterable[Path]:
    if not folder.is_dir():
        return []
    found = sorted(p.resolve() for p in folder.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return found[:MAX_FILES_PER_FOLDER]


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
