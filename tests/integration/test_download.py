"""Large-file downloads: resume, sha256, the stat cache vs --deep, auth, disk space."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_hub import HubState, serve_hub
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, converge, pending, plan

MODEL = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture
def hub() -> Iterator[tuple[HubState, str]]:
    state = HubState()
    with serve_hub(state) as endpoint:
        yield state, endpoint


def _manifest(tmp_path: Path, host: TargetHost, url: str, sha: str | None, **extra: object) -> Path:
    spec: dict[str, object] = {"kind": "download", "path": "models/unet/model.safetensors", "url": url}
    if sha:
        spec["sha256"] = sha
    spec.update(extra)
    return write_manifest(tmp_path, host, {"resources": [spec]})


def test_download_resumes_after_a_dropped_connection(host: TargetHost, tmp_path: Path,
                                                     hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    sha = state.add("org/flux", "model.safetensors", MODEL)
    state.drop_first_response_for.add("org/flux/main/model.safetensors")
    manifest = _manifest(tmp_path, host, f"{endpoint}/org/flux/resolve/main/model.safetensors", sha, size=len(MODEL))
    report = plan(manifest)
    assert pending(report) == {"download:models/unet/model.safetensors": ["file"]}
    converge(manifest)
    ranges = [r for _, r in state.requests if r]
    assert ranges and ranges[0] == f"bytes={len(MODEL) // 2}-", "the second request resumes where the first broke"
    assert host.run(["sha256sum", host.path("models/unet/model.safetensors")]).stdout.split()[0] == sha
    assert not host.exists("models/unet/model.safetensors.part")


def test_stat_cache_trusts_unchanged_files_and_deep_rehashes(host: TargetHost, tmp_path: Path,
                                                             hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    sha = state.add("org/flux", "model.safetensors", MODEL)
    manifest = _manifest(tmp_path, host, f"{endpoint}/org/flux/resolve/main/model.safetensors", sha)
    converge(manifest)
    cache = json.loads(host.read(".provision/statcache.json"))
    assert cache[host.path("models/unet/model.safetensors")]["sha256"] == sha

    # Flip one byte but keep size and mtime: only --deep can see it.
    target = host.path("models/unet/model.safetensors")
    host.run(["python3", "-c", (
        "import os, sys; p = sys.argv[1]; st = os.stat(p); f = open(p, 'r+b'); f.seek(1000); "
        "b = f.read(1); f.seek(1000); f.write(bytes([b[0] ^ 1])); f.close(); "
        "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))"), target])
    assert plan(manifest).exit_code() == 0, "the stat cache is trusted without --deep"
    deep = plan(manifest, deep=True)
    assert pending(deep) == {"download:models/unet/model.safetensors": ["sha256"]}
    assert apply(manifest, deep=True).ok
    assert plan(manifest, deep=True).exit_code() == 0
    assert host.run(["sha256sum", target]).stdout.split()[0] == sha


def test_wrong_sha_fails_and_leaves_nothing_in_place(host: TargetHost, tmp_path: Path,
                                                     hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    state.add("org/flux", "model.safetensors", MODEL)
    manifest = _manifest(tmp_path, host, f"{endpoint}/org/flux/resolve/main/model.safetensors", "0" * 64)
    report = apply(manifest)
    assert not report.ok
    assert "does not match the pinned" in report.resources[0]["error"]
    assert not host.exists("models/unet/model.safetensors")
    assert not host.exists("models/unet/model.safetensors.part")


def test_gated_file_needs_the_token_which_is_never_shown(host: TargetHost, tmp_path: Path,
                                                         hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    state.token = "hf_gatedtoken_987654"
    sha = state.add("org/gated", "model.safetensors", MODEL)
    url = f"{endpoint}/org/gated/resolve/main/model.safetensors"
    manifest = _manifest(tmp_path, host, url, sha, auth={"from_env": "TEST_HF_TOKEN", "optional": True})
    refused = apply(manifest, environ={})
    assert not refused.ok and "401" in refused.resources[0]["error"] and "HF_TOKEN" in refused.resources[0]["error"]
    environ = {"TEST_HF_TOKEN": state.token}
    report = converge(manifest, environ)
    assert state.token not in json.dumps(report.as_json())
    assert state.token not in host.sh(f"cat {host.path('.provision/generations')}/*.json")


def test_disk_space_is_checked_before_downloading(host: TargetHost, tmp_path: Path,
                                                  hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    state.add("org/huge", "model.safetensors", b"x")
    manifest = _manifest(tmp_path, host, f"{endpoint}/org/huge/resolve/main/model.safetensors", None,
                         size=1 << 60)
    report = apply(manifest)
    assert not report.ok and "only" in report.resources[0]["error"] and "free" in report.resources[0]["error"]
    assert state.requests == [], "nothing is fetched when it cannot fit"
