"""Wheels built on hosts, kept on the controller by build key and pushed to other hosts with the same key.

Layout, a sibling of the download cache's folders in the same `--download-cache DIR`:

    DIR/built-wheels/<build_key>/<wheel file name>
    DIR/built-wheels/<build_key>/<wheel file name>.build.json   (the record, agent/build_record.py)

After a host builds a wheel, the controller fetches it with its record (only when the record names the
resource's build key and the sha256 matches). Before another host applies, every wheel_build resource that
host lacks and the cache holds is pushed with a record of origin "pushed", so its probe is satisfied and no
build runs there.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.agent.build_record import encode_record, make_record, parse_record, record_accepts, record_path
from provisioner.agent.fsutil import human_size, sha256_file
from provisioner.agent_client import EventCallback
from provisioner.download_cache import DownloadCacheError, file_lock
from provisioner.errors import TransportError
from provisioner.transport.base import Transport

BUILT_WHEELS = "built-wheels"


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
        if len(build_key) != 64 or not all(c in "0123456789abcdef" for c in build_key) or "/" in filename:
            raise DownloadCacheError(f"built-wheel cache: {build_key!r}/{filename!r} is not a build key and file name")
        return self.directory / build_key / filename

    def lookup(self, build: WheelBuild) -> CachedWheel | None:
        """The cached wheel of this build, when its record and bytes agree; a file that does not is ignored."""
        path = self.path_for(build.build_key, build.filename)
        try:
            record = parse_record(Path(record_path(str(path))).read_bytes())
            digest = sha256_file(str(path))
        except OSError:
            return None
        if not record_accepts(record, build.build_key, str(path), digest):
            return None
        return CachedWheel(path, build.build_key, digest, path.stat().st_size)

    def store(self, build: WheelBuild, wheel: Path, record_bytes: bytes) -> CachedWheel | None:
        """Move a wheel fetched from a host into the cache, if its record says it is this build; else drop it."""
        record = parse_record(record_bytes)
        digest = sha256_file(str(wheel))
        target = self.path_for(build.build_key, build.filename)
        if not record_accepts(record, build.build_key, str(target), digest):
            wheel.unlink(missing_ok=True)
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(target):
            os.replace(wheel, target)
            _write_bytes(Path(record_path(str(target))), record_bytes)
        return CachedWheel(target, build.build_key, digest, target.stat().st_size)


def builds_of(resources: Iterable[Any]) -> list[WheelBuild]:
    """The wheel_build resources of an expansion."""
    return [WheelBuild.from_spec(r.id, r.spec) for r in resources if r.kind == "wheel_build"]


def wheels_to_push(builds: list[WheelBuild], statuses: dict[str, str], cache: BuiltWheelCache,
                   ) -> list[tuple[WheelBuild, CachedWheel]]:
    """The builds this host would run (probe not ok, not an error) whose wheel the cache already holds."""
    wanted = [b for b in builds if statuses.get(b.id) not in (None, "ok", "error")]
    return [(b, cached) for b in wanted if (cached := cache.lookup(b)) is not None]


def wheels_to_fetch(builds: list[WheelBuild], outcomes: dict[str, str], pushed: set[str],
                    cache: BuiltWheelCache) -> list[WheelBuild]:
    """The builds that ran on this host (changed, not pushed) and that the cache does not hold yet."""
    return [b for b in builds if outcomes.get(b.id) == "changed" and b.id not in pushed and cache.lookup(b) is None]


def push_wheel(transport: Transport, root: str, build: WheelBuild, cached: CachedWheel,
               on_event: EventCallback | None = None) -> None:
    """Put the wheel, then its record, each through a temporary name renamed into place on the host."""
    remote = posixpath.join(root, build.path)
    record = make_record(build.project, build.build_key, build.filename, cached.sha256, cached.size, "pushed")
    _put_atomically(transport, cached.path, remote)
    with tempfile.TemporaryDirectory(prefix="provision-record-") as scratch:
        local = Path(scratch) / "record.json"
        local.write_bytes(encode_record(record))
        _put_atomically(transport, local, record_path(remote))
    _notify(on_event, build.id, "pushed", f"{build.id}: pushed the {build.project} wheel built for this key from the "
            f"controller cache ({human_size(cached.size)}); no build runs here")


def fetch_wheel(transport: Transport, root: str, build: WheelBuild, cache: BuiltWheelCache,
                on_event: EventCallback | None = None) -> CachedWheel | None:
    """Bring a wheel the host just built (with its record) into the cache; None when the host's copy is not it."""
    remote = posixpath.join(root, build.path)
    cache.directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=cache.directory) as scratch:
        wheel, record = Path(scratch) / build.filename, Path(scratch) / "record.json"
        try:
            transport.get(remote, wheel)
            transport.get(record_path(remote), record)
        except TransportError as exc:
            _notify(on_event, build.id, "cache", f"{build.id}: the built wheel was not fetched into the controller "
                    f"cache: {exc}")
            return None
        cached = cache.store(build, wheel, record.read_bytes())
    if cached is not None:
        _notify(on_event, build.id, "cached", f"{build.id}: the built wheel is now in the controller cache "
                f"({human_size(cached.size)}); hosts with the same build key get it pushed")
    return cached


def _put_atomically(transport: Transport, local: Path, remote: str) -> None:
    temporary = f"{remote}.push-{os.getpid()}.tmp"
    transport.put(local, temporary, 0o644)
    moved = transport.run(["mv", "-f", "--", temporary, remote], timeout=60)
    if not moved.ok:
        raise TransportError(f"{transport.display}: cannot move {temporary} to {remote}: {moved.stderr.strip()}")


def _write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _notify(on_event: EventCallback | None, rid: str, phase: str, message: str) -> None:
    if on_event is not None:
        on_event({"event": "progress", "id": rid, "phase": phase, "message": message})
