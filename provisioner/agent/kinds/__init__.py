"""Resource kinds: each module has probe(spec, ctx), diff(spec, observed, ctx) and apply(...)."""

from __future__ import annotations

from types import ModuleType
from typing import Dict

from . import command, directory, download, envfile, file, git, pip, requirements, service, venv

KINDS: Dict[str, ModuleType] = {
    "directory": directory,
    "file": file,
    "envfile": envfile,
    "venv": venv,
    "pip": pip,
    "git": git,
    "command": command,
    "download": download,
    "service": service,
    "requirements": requirements,
}
