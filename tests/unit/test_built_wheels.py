"""The controller's built-wheel cache: keyed by build key, pushed only where a host would build, fetched
only after a host built; the record both sides read and write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from provisioner.agent.build_record import (
    encode_record,
    make_record,
    parse_record,
    read_record,
    record_accepts,
    record_path,
    write_record,
)
from provisioner.built_wheels import (
    BuiltWheelCache,
    WheelBuild,
    fetch_wheel,
    push_wheel,
    wheels_to_fetch,
    wheels_to_push,
)
from provisioner.download_cache import DownloadCacheError
from provisioner.transport.local import LocalTransport

KEY_A = "a" * 64
KEY_B = "b" * 64
WHEEL = "cache/wheels/nunchaku-1.2.1+cu13.0torch2.11-cp312-cp312-linux_x86_64.whl"
BYTES = b"PK\x03\x04 not really a zip, but bytes with a sha256"


def _build(rid: str = "wheel_build:" + WHEEL, key: str = KEY_A, path: str = WHEEL) -> WheelBuild:
    return WheelBuild(rid, path, key, "nunchaku")


def _host_built(root: Path, build: WheelBuild, data: bytes = BYTES, key: str | None = None) -> Path:
    """What the host's wheel_build kind leaves behind: the wheel at its path and its record."""
    wheel = root / build.path
    wheel.parent.mkdir(parents=True, exist_ok=True)
    wheel.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    record = make_record("nunchaku", key or build.build_key, build.filename, digest, len(data), "built")
    write_record(str(wheel), record)
    return wheel


def _cached(tmp_path: Path, build: WheelBuild) -> BuiltWheelCache:
    cache = BuiltWheelCache(tmp_path / "cache")
    host = tmp_path / "builder"
    _host_built(host, build)
    assert fetch_wheel(LocalTransport(), str(host), build, cache) is not None
    return cache


def test_the_record_round_trips_and_rejects_what_is_not_one(tmp_path: Path) -> None:
    wheel = tmp_path / "x.whl"
    wheel.write_bytes(BYTES)
    digest = hashlib.sha256(BYTES).hexdigest()
    record = make_record("nunchaku", KEY_A, "x.whl", digest, len(BYTES), "built")
    write_record(str(wheel), record)
    assert Path(record_path(str(wheel))).name == "x.whl.build.json"
    assert read_record(str(wheel)) == record
    assert record_accepts(read_record(str(wheel)), KEY_A, str(wheel), digest)
    assert not record_accepts(read_record(str(wheel)), KEY_B, str(wheel), digest)
    assert not record_accepts(read_record(str(wheel)), KEY_A, str(wheel), "0" * 64)
    assert not record_accepts(read_record(str(wheel)), KEY_A, str(tmp_path / "y.whl"), digest)
    for bad in (b"", b"{", b"[]", encode_record({**record, "format": 2}), encode_record({**record, "sha256": "zz"}),
                encode_record({**record, "build_key": KEY_A[:-1]})):
        assert parse_record(bad) is None


def test_the_cache_is_keyed_by_build_key(tmp_path: Path) -> None:
    build = _build()
    cache = _cached(tmp_path, build)
    assert (cache.directory / KEY_A / build.filename).is_file()
    found = cache.lookup(build)
    assert found is not None and found.sha256 == hashlib.sha256(BYTES).hexdigest() and found.size == len(BYTES)
    assert cache.lookup(_build(key=KEY_B)) is None
    assert cache.lookup(_build(path="cache/wheels/nunchaku-1.2.1+cu13.0torch2.10-cp312-cp312-linux_x86_64.whl")) is None


def test_a_cached_wheel_whose_bytes_changed_is_not_used(tmp_path: Path) -> None:
    build = _build()
    cache = _cached(tmp_path, build)
    (cache.directory / KEY_A / build.filename).write_bytes(BYTES + b"tampered")
    assert cache.lookup(build) is None


def test_a_bad_key_cannot_reach_outside_the_cache(tmp_path: Path) -> None:
    cache = BuiltWheelCache(tmp_path)
    with pytest.raises(DownloadCacheError):
        cache.path_for("../../etc", "x.whl")


def test_push_goes_only_where_the_host_would_build_and_the_cache_has_the_key(tmp_path: Path) -> None:
    here, other, fine, broken = _build("w:a"), _build("w:b", key=KEY_B), _build("w:c"), _build("w:d")
    cache = _cached(tmp_path, here)
    statuses = {"w:a": "create", "w:b": "create", "w:c": "ok", "w:d": "error"}
    pushes = wheels_to_push([here, other, fine, broken], statuses, cache)
    assert [build.id for build, _cached_wheel in pushes] == ["w:a"]


def test_fetch_goes_only_after_a_build_ran_here(tmp_path: Path) -> None:
    built, pushed, unchanged, failed = _build("w:a"), _build("w:b", key=KEY_B), _build("w:c", key=KEY_B), \
        _build("w:d", key=KEY_B)
    cache = BuiltWheelCache(tmp_path / "cache")
    outcomes = {"w:a": "changed", "w:b": "changed", "w:c": "ok", "w:d": "failed"}
    assert [b.id for b in wheels_to_fetch([built, pushed, unchanged, failed], outcomes, {"w:b"}, cache)] == ["w:a"]
    cache = _cached(tmp_path, built)
    assert wheels_to_fetch([built], {"w:a": "changed"}, set(), cache) == []  # already cached


def test_a_pushed_wheel_satisfies_the_record_check_on_the_other_host(tmp_path: Path) -> None:
    build = _build()
    cache = _cached(tmp_path, build)
    second = tmp_path / "second-host"
    events: list[str] = []
    cached = cache.lookup(build)
    assert cached is not None
    push_wheel(LocalTransport(), str(second), build, cached, lambda e: events.append(e["message"]))
    wheel = second / build.path
    assert wheel.read_bytes() == BYTES
    record = read_record(str(wheel))
    assert record is not None and record["origin"] == "pushed"
    assert record_accepts(record, KEY_A, str(wheel), hashlib.sha256(wheel.read_bytes()).hexdigest())
    assert sorted(p.name for p in wheel.parent.iterdir()) == [build.filename, build.filename + ".build.json"]
    assert events and "no build runs here" in events[0]


def test_a_host_wheel_recorded_for_another_key_is_not_cached(tmp_path: Path) -> None:
    build = _build()
    host = tmp_path / "builder"
    _host_built(host, build, key=KEY_B)
    cache = BuiltWheelCache(tmp_path / "cache")
    assert fetch_wheel(LocalTransport(), str(host), build, cache) is None
    assert cache.lookup(build) is None and not list((cache.directory).rglob("*.whl"))
