"""Resource kinds: each module has probe(spec, ctx), diff(spec, observed, ctx) and apply(...)."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..protocol import ResourceFailure

NAMES = ("command", "directory", "download", "envfile", "file", "git", "pip", "requirements", "service", "venv",
         "wheel_build")


def kind(name: str) -> ModuleType:
    """The module for one kind, imported on first use: a request pays only for the kinds it holds."""
    if name not in NAMES:
        raise ResourceFailure("unknown resource kind %r (this agent knows: %s)" % (name, ", ".join(NAMES)))
    return importlib.import_module("." + name, __name__)
