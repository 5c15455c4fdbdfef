"""The controller's built-wheel cache: keyed by build key, pushed only where a host would build (as the
resource's staged file), fetched only after a host built it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from provisioner.built_wheels import (
    BuiltWheelCache,
    WheelBuild,
    fetch_wheel,
    push_wheels,
    wheels_to_fetch,
    wheels_to_push,
)
from provisioner.download_cache import DownloadCacheError
from provisioner.download_push import INCOMING, staged_name
from provisioner.transport.local import LocalTransport

KEY_A = "a" * 64
KEY_B = "b" * 64
WHEEL = "cache/wheels/nunchaku-1.2.1+cu13.0torch2.11-cp312-cp312-linux_x86_64.whl"
BYTES = b"PK\x03\x04 not really a zip, but bytes with a sha256"


def _build(rid: str = "wheel_build:" + WHEEL, key: str = KEY_A, path: str = WHEEL) -> WheelBuild:
    return WheelBuild(rid, path, key, "nunchaku")


def _cached(tmp_path: Path, build: WheelBuild) -> BuiltWheelCache:
    """A cache holding `build`, fetched from a host root where the wheel was built."""
    cache = BuiltWheelCache(tmp_path / "cache")
    host = tmp_path / "builder"
    (host / build.path).parent.mkdir(parents=True, exist_ok=True)
    (host / build.path).write_bytes(BYTES)
    assert fetch_wheel(LocalTransport(), str(host), build, cache) is not None
    return cache


def test_the_cache_is_keyed_by_build_key_and_file_name(tmp_path: Path) -> None:
    build = _build()
    cache = _cached(tmp_path, build)
    assert (cache.directory / KEY_A / build.filename).read_bytes() == BYTES
    found = cache.lookup(build)
    assert found is not None and found.sha256 == hashlib.sha256(BYTES).hexdigest() and found.size == len(BYTES)
    assert cache.lookup(_build(key=KEY_B)) is None
    assert cache.lookup(_build(path="cache/wheels/nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl")) \
        is None


def test_a_cached_wheel_whose_bytes_changed_is_not_used(tmp_path: Path) -> None:
    build = _build()
    cache = _cached(tmp_path, build)
    (cache.directory / KEY_A / build.filename).write_bytes(BYTES + b"tampered")
    assert cache.lookup(build) is None


@pytest.mark.parametrize(("key", "name"), [("../../etc", "x.whl"), (KEY_A, "../x.whl"), (KEY_A, ".x"), ("xyz", "a")])
def test_a_bad_key_or_name_cannot_reach_outside_the_cache(tmp_path: Path, key: str, name: str) -> None:
    with pytest.raises(DownloadCacheError):
        BuiltWheelCache(tmp_path).path_for(key, name)


def test_push_goes_only_where_the_host_would_build_and_the_cache_has_the_key(tmp_path: Path) -> None:
    here, other, fine, broken = _build("w:a"), _build("w:b", key=KEY_B), _build("w:c"), _build("w:d")
    cache = _cached(tmp_path, here)
    statuses = {"w:a": "create", "w:b": "create", "w:c": "ok", "w:d": "error"}
    pushes = wheels_to_push([here, other, fine, broken], statuses, cache)
    assert [build.id for build, _cached_wheel in pushes] == ["w:a"]


def test_fetch_goes_only_after_a_build_converged_here(tmp_path: Path) -> None:
    built, pushed, unchanged, failed, unconverged = (
        _build("w:a"), _build("w:b", key=KEY_B), _build("w:c", key=KEY_B), _build("w:d", key=KEY_B),
        _build("w:e", key=KEY_B))
    cache = BuiltWheelCache(tmp_path / "cache")
    outcomes = {"w:a": "changed", "w:b": "changed", "w:c": "ok", "w:d": "failed", "w:e": "changed"}
    reprobe = {"w:a": "ok", "w:b": "ok", "w:c": "ok", "w:d": "create", "w:e": "drifted"}
    every = [built, pushed, unchanged, failed, unconverged]
    assert [b.id for b in wheels_to_fetch(every, outcomes, reprobe, {"w:b"}, cache)] == ["w:a"]
    cache = _cached(tmp_path, built)
    assert wheels_to_fetch([built], {"w:a": "changed"}, {"w:a": "ok"}, set(), cache) == []  # already cached


def test_a_push_names_the_staged_wheel_in_a_copy_of_the_request(tmp_path: Path) -> None:
    build = _build()
    cache = _cached(tmp_path, build)
    cached = cache.lookup(build)
    assert cached is not None
    host = tmp_path / "second-host"
    spec: dict[str, Any] = {"path": WHEEL, "build_key": KEY_A}
    request = {"root": str(host), "resources": [{"id": build.id, "kind": "wheel_build", "spec": spec},
                                                {"id": "pip:venv", "kind": "pip", "spec": {}}]}
    events: list[str] = []
    out = push_wheels(LocalTransport(), str(host), request, [(build, cached)], lambda e: events.append(e["message"]))
    staged = out["resources"][0]["spec"]
    assert staged["staged"] == str(host / INCOMING / staged_name(WHEEL))
    assert staged["staged"].endswith("-" + build.filename)  # what the host's kind checks before it places it
    assert staged["staged_sha256"] == cached.sha256
    assert Path(staged["staged"]).read_bytes() == BYTES
    assert "staged" not in spec and out["resources"][1] is request["resources"][1]
    assert events and "no build runs here" in events[0]


def test_a_wheel_the_host_cannot_give_is_not_cached(tmp_path: Path) -> None:
    build = _build()
    cache = BuiltWheelCache(tmp_path / "cache")
    events: list[str] = []
    assert fetch_wheel(LocalTransport(), str(tmp_path / "nothing"), build, cache,
                       lambda e: events.append(e["message"])) is None
    assert cache.lookup(build) is None and not list(cache.directory.rglob("*.whl"))
    assert events and "was not fetched" in events[0]
