"""The lock file: every identity a resolution chose, pinned (commits, sha256s, revisions), as YAML.

Fields are written in the order they are declared here, so a lock diffs cleanly in review and two
locks of the same inputs are byte-identical. URLs are the upstream ones; mirrors are applied when
the lock is used, so one lock serves both connected and air-gapped controllers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from provisioner.errors import ManifestError
from provisioner.lock.errors import LockFileError
from provisioner.manifest.loader import validate_model
from provisioner.manifest.model import Manifest
from provisioner.manifest.source import load_yaml_file

SHA256 = r"^[0-9a-f]{64}$"
COMMIT = r"^[0-9a-f]{40}$"

HEADER = """\
# Written by `provision lock`; do not edit by hand.
# It pins what the manifest resolved to on the host described under `facts`: git commits,
# the nunchaku wheel's sha256, the torch build and Hugging Face revisions. plan/apply use these
# pins; when the manifest resolves to something else they say so, and `provision lock --update`
# re-resolves and rewrites this file.
"""


class _Locked(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LockedManifest(_Locked):
    name: str
    digest: str = Field(description="sha256 of the validated manifest (extends merged), canonical JSON.")


class LockedFacts(_Locked):
    """The host facts the resolution depended on; another host may resolve differently."""

    gpu_arch: str | None
    python: str | None
    platform: str | None
    driver_cuda: str | None


class LockedGit(_Locked):
    repo: str
    ref: str = Field(description="What the resolution asked for: a tag, branch or commit.")
    commit: str = Field(pattern=COMMIT)


class LockedPlugin(_Locked):
    name: str
    repo: str
    ref: str
    commit: str = Field(pattern=COMMIT)


class LockedTorch(_Locked):
    version: str
    cuda: str | None
    index_url: str
    requirements: list[str]


class LockedWheel(_Locked):
    version: str
    filename: str
    url: str
    sha256: str | None = Field(pattern=SHA256)
    size: int | None = Field(ge=0)


class LockedModel(_Locked):
    repo: str | None
    file: str
    filename: str
    folder: str
    revision: str = Field(description="What the manifest asked for (a branch, tag or commit).")
    commit: str | None = Field(description="The Hub commit `revision` pointed to when locked.")
    url: str | None = Field(description="Upstream download URL (at `commit` for Hub files).")
    sha256: str | None = Field(pattern=SHA256)
    size: int | None = Field(ge=0)

    @property
    def key(self) -> tuple[str | None, str, str]:
        return self.repo, self.file, self.folder


class Lock(_Locked):
    version: Literal[1] = 1
    manifest: LockedManifest
    facts: LockedFacts
    mode: str | None
    torch: LockedTorch | None = None
    nunchaku: LockedWheel | None = None
    comfyui: LockedGit | None = None
    plugins: list[LockedPlugin] = Field(default_factory=list)
    models: list[LockedModel] = Field(default_factory=list)


def lock_path_for(manifest_path: Path) -> Path:
    """MANIFEST.lock next to the manifest (`rtx4090.yaml` -> `rtx4090.yaml.lock`)."""
    return manifest_path.with_name(manifest_path.name + ".lock")


def manifest_digest(manifest: Manifest) -> str:
    """Digest of what the manifest means, not how it is written: comments and key order do not count."""
    canonical = json.dumps(manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def dump_lock(lock: Lock) -> str:
    """The lock as YAML text: header comment, then fields in declaration order."""
    data: dict[str, Any] = lock.model_dump(mode="json")
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    return HEADER + body


def write_lock(lock: Lock, path: Path) -> None:
    """Atomic write, so an interrupted lock never leaves half a file for the next plan to trust."""
    text = dump_lock(lock)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_lock(path: Path) -> Lock:
    """Parse and validate a lock file; problems name file:line and the field."""
    try:
        loaded = load_yaml_file(path)
        return validate_model(Lock, loaded.data, loaded.source)
    except ManifestError as exc:
        raise LockFileError(exc.issues) from None
