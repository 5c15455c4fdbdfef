"""Wheels built on hosts, kept on the controller by build key and pushed to other hosts with the same key.

Layout, a sibling of the download cache's folders in the same `--download-cache DIR`:

    DIR/built-wheels/<build_key>/<wheel file name>
    DIR/built-wheels/<build_key>/<wheel file name>.json
        {"build_key": "<hex>", "filename": "<wheel file name>", "sha256": "<64 hex>", "size": <bytes>,
         "host": "<where it was built>"}

After an apply in which a wheel_build resource changed (it built) and whose re-probe is ok (the host's own
record says the wheel at its path is this build key, with the recorded sha256), the controller fetches the
wheel into the cache. Before another host applies, every wheel_build that host would run and the cache holds
is pushed to `<root>/.provision/incoming/` and named in the request as the spec's `staged` file with its
`staged_sha256`, as downloads are; the host's wheel_build kind verifies it and places it instead of building.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.agent.fsutil import human_size, sha256_file
from provisioner.agent_client import EventCallback
from provisioner.download_cache import DownloadCacheError, file_lock
from provisioner.download_push import INCOMING, STAGED_MODE, staged_name
from provisioner.errors import TransportError
from provisioner.transport.base import Transport

BUILT_WHEELS = "built-wheels"
_HEX = set("0123456789abcdef")


@dataclass(frozen=True)
class CachedWheel:
    path: Path
    build_key: str
    sha256: str
    size: int


@dataclass(frozen=True)
class WheelBuild:
    """What the cache needs of one wheel_build resource."""

    id: str
    path: str  # relative to the target root
    build_key: str
    project: str

    @property
    def filename(self) -> str:
        return posixpath.basename(self.path)

    @classmethod
    def from_spec(cls, rid: str, spec: dict[str, Any]) -> WheelBuild:
        return cls(rid, spec["path"], spec["build_key"], spec.get("project") or "wheel")


class BuiltWheelCache:
    def __init__(self, download_cache: Path) -> None:
        self.directory = download_cache.expanduser().absolute() / BUILT_WHEELS

    def path_for(self, build_key: str, filename: str) -> Path:
        if not 8 <= len(build_key) <= 128 or not set(build_key) <= _HEX or "/" in filename or filename[:1] in ("", "."):
            raise DownloadCacheError(f"built-wheel cache: {build_key!r}/{filename!r} is not a build key and file name")
        return self.directory / build_key / filename

    def lookup(self, build: WheelBuild) -> CachedWheel | None:
        """The cached wheel of this build, when its record and bytes agree; a file that does not is ignored."""
        path = self.path_for(build.build_key, build.filename)
        try:
            record = json.loads(_record_path(path).read_text(encoding="utf-8"))
            digest = sha256_file(str(path))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or (record.get("build_key"), record.get("filename"), record.get("sha256")) != (
                build.build_key, build.filename, digest):
            return None
        return CachedWheel(path, build.build_key, digest, path.stat().st_size)

    def store(self, build: WheelBuild, wheel: Path, host: str) -> CachedWheel:
        """Move a wheel fetched from a host into the cache under its build key, with the cache's record."""
        target = self.path_for(build.build_key, build.filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256_file(str(wheel))
        size = wheel.stat().st_size
        record = {"build_key": build.build_key, "filename": build.filename, "sha256": digest, "size": size,
                  "host": host}
        with file_lock(target):
            os.replace(wheel, target)
            temporary = target.with_name(f"{target.name}.json.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(temporary, _record_path(target))
        return CachedWheel(target, build.build_key, digest, size)


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def builds_of(resources: Iterable[Any]) -> list[WheelBuild]:
    """The wheel_build resources of an expansion."""
    return [WheelBuild.from_spec(r.id, r.spec) for r in resources if r.kind == "wheel_build"]


def wheels_to_push(builds: list[WheelBuild], statuses: dict[str, str], cache: BuiltWheelCache,
                   ) -> list[tuple[WheelBuild, CachedWheel]]:
    """The builds this host would run (probe not ok, not an error) whose wheel the cache already holds."""
    wanted = [b for b in builds if statuses.get(b.id) not in (None, "ok", "error")]
    return [(b, cached) for b in wanted if (cached := cache.lookup(b)) is not None]


def wheels_to_fetch(builds: list[WheelBuild], outcomes: dict[str, str], reprobe: dict[str, str], pushed: set[str],
                    cache: BuiltWheelCache) -> list[WheelBuild]:
    """The builds that ran here (changed, not pushed), that the host now holds as built (re-probe ok), and that
    the cache does not hold yet."""
    return [b for b in builds if outcomes.get(b.id) == "changed" and reprobe.get(b.id) == "ok"
            and b.id not in pushed and cache.lookup(b) is None]


def push_wheels(transport: Transport, root: str, request: dict[str, Any],
                pushes: list[tuple[WheelBuild, CachedWheel]], on_event: EventCallback | None = None,
                ) -> dict[str, Any]:
    """Put each cached wheel into the host's incoming folder; the apply request names it as `staged`."""
    staged: dict[str, dict[str, str]] = {}
    for build, cached in pushes:
        remote = posixpath.join(root, INCOMING, staged_name(build.path))
        transport.put(cached.path, remote, STAGED_MODE)
        staged[build.id] = {"staged": remote, "staged_sha256": cached.sha256}
        _notify(on_event, build.id, "pushed", f"{build.id}: pushed the {build.project} wheel built for this key "
                f"from the controller cache ({human_size(cached.size)}); no build runs here")
    if not staged:
        return request
    # Copies, never the expansion's own specs: `staged` belongs to this one request.
    resources = [dict(r, spec={**r["spec"], **staged[r["id"]]}) if r["id"] in staged else r
                 for r in request["resources"]]
    return dict(request, resources=resources)


def fetch_wheel(transport: Transport, root: str, build: WheelBuild, cache: BuiltWheelCache,
                on_event: EventCallback | None = None) -> CachedWheel | None:
    """Bring a wheel the host just built into the cache; None (and a progress line) when it cannot be read."""
    remote = posixpath.join(root, build.path)
    cache.directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=cache.directory) as scratch:
        wheel = Path(scratch) / build.filename
        try:
            transport.get(remote, wheel)
        except TransportError as exc:
            _notify(on_event, build.id, "cache", f"{build.id}: the built wheel was not fetched into the controller "
                    f"cache: {exc}")
            return None
        cached = cache.store(build, wheel, transport.display)
    _notify(on_event, build.id, "cached", f"{build.id}: the built wheel is now in the controller cache "
            f"({human_size(cached.size)}); hosts with the same build key get it pushed")
    return cached


def _notify(on_event: EventCallback | None, rid: str, phase: str, message: str) -> None:
    if on_event is not None:
        on_event({"event": "progress", "id": rid, "phase": phase, "message": message})
