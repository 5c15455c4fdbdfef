"""Target hosts for tests: how to reach them in a manifest, and how to poke at them directly."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TargetHost:
    """A host the suite provisions: local today; SSH and Docker hosts plug in with their own `run`."""

    name: str
    connection: str
    root: str
    target_extra: dict[str, Any] = field(default_factory=dict)
    exec_prefix: list[str] = field(default_factory=list)

    def target(self) -> dict[str, Any]:
        return {"connection": self.connection, "root": self.root, **self.target_extra}

    def run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run argv on the host (for tampering and assertions), outside of provision."""
        return subprocess.run([*self.exec_prefix, *argv], capture_output=True, text=True, check=check)

    def sh(self, script: str) -> str:
        return self.run(["sh", "-c", script]).stdout

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def read(self, relative: str) -> str:
        return self.run(["cat", self.path(relative)]).stdout

    def exists(self, relative: str) -> bool:
        return self.run(["test", "-e", self.path(relative)], check=False).returncode == 0


def write_manifest(directory: Path, host: TargetHost, body: dict[str, Any], name: str = "manifest.yaml") -> Path:
    document = {"name": "test", "target": host.target(), **body}
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def installed_version(host: TargetHost, name: str, venv: str = "venv") -> str | None:
    """The version of `name` installed in the target's venv, as its metadata says; None when it is not."""
    script = ("import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\n"
              "except m.PackageNotFoundError: print('')")
    return host.run([host.path(f"{venv}/bin/python"), "-c", script, name]).stdout.strip() or None
