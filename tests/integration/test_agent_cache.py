"""The agent's compiled-code cache on the host: used when it is the user's own, ignored when anyone else
could have written it, rebuilt when damaged, and one version kept."""

from __future__ import annotations

import marshal
import os
import stat
import sys
from pathlib import Path

import pytest

from provisioner.agent_client import AgentClient, agent_digest, agent_modules
from provisioner.errors import AgentError
from provisioner.transport.local import LocalTransport


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache-home"
    home.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def cache_file(cache_home: Path) -> Path:
    return cache_home / "provision" / f"agent-{agent_digest()}-{sys.implementation.cache_tag}.marshal"


def generations(root: Path) -> dict[str, object]:
    """A cheap request that still imports the agent's modules from the cache."""
    return AgentClient(LocalTransport(), python=sys.executable).call("generations", {"root": str(root)})


def planted_code(marker: Path) -> bytes:
    """A cache whose every module writes `marker` when executed: what a tampered cache would run."""
    payload = compile(f"open({str(marker)!r}, 'w').write('ran')", "<planted>", "exec")
    return marshal.dumps({name: marshal.dumps(payload) for name in agent_modules()})


def test_first_call_writes_a_private_cache_and_later_calls_use_it(cache_home: Path, tmp_path: Path) -> None:
    assert generations(tmp_path / "root") == {"generations": []}
    cached = cache_file(cache_home)
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert stat.S_IMODE(cached.parent.stat().st_mode) == 0o700
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]

    # Proof that the next call executes the cached code rather than compiling the sources again (the
    # planted modules define nothing, so the request itself then fails).
    marker = tmp_path / "ran"
    cached.write_bytes(planted_code(marker))
    with pytest.raises(AgentError, match="no attribute 'serve'"):
        generations(tmp_path / "root")
    assert marker.exists()


@pytest.mark.parametrize("loosen", ["file", "directory"])
def test_a_cache_others_can_write_is_never_executed(
    cache_home: Path, tmp_path: Path, loosen: str
) -> None:
    generations(tmp_path / "root")
    cached = cache_file(cache_home)
    marker = tmp_path / "ran"
    cached.write_bytes(planted_code(marker))
    loosened = cached if loosen == "file" else cached.parent
    os.chmod(loosened, 0o666 if loosen == "file" else 0o777)

    assert generations(tmp_path / "root") == {"generations": []}
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "code objects instead of blobs", "a module missing"])
def test_a_damaged_cache_is_rebuilt(cache_home: Path, tmp_path: Path, damage: str) -> None:
    generations(tmp_path / "root")
    cached = cache_file(cache_home)
    good = cached.read_bytes()
    blobs = marshal.loads(good)
    if damage == "truncated":
        cached.write_bytes(good[: len(good) // 2])
    elif damage == "code objects instead of blobs":
        cached.write_bytes(marshal.dumps({name: marshal.loads(blob) for name, blob in blobs.items()}))
    else:
        cached.write_bytes(marshal.dumps(dict(list(blobs.items())[1:])))

    assert generations(tmp_path / "root") == {"generations": []}
    assert marshal.loads(cached.read_bytes()).keys() == marshal.loads(good).keys()


def test_only_the_current_agent_version_is_kept(cache_home: Path, tmp_path: Path) -> None:
    directory = cache_home / "provision"
    directory.mkdir(mode=0o700)
    stale = directory / f"agent-{'0' * 32}-{sys.implementation.cache_tag}.marshal"
    stale.write_bytes(b"old")
    unrelated = directory / "something-else"
    unrelated.write_text("kept")

    generations(tmp_path / "root")

    assert not stale.exists()
    assert unrelated.read_text() == "kept"
    assert cache_file(cache_home).exists()


def test_an_unwritable_cache_location_still_serves_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert generations(tmp_path / "root") == {"generations": []}
