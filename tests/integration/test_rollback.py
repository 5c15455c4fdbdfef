"""Rollback re-applies an earlier generation: files, env (secrets restored), git ref, package pins."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.engine import HostSession
from provisioner.errors import AgentError
from provisioner.manifest import load_manifest
from tests.support.gitrepos import UpstreamRepo
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, plan


def _manifest(tmp_path: Path, host: TargetHost, upstream: UpstreamRepo, version: str, ref: str,
              index: str) -> Path:
    return write_manifest(tmp_path, host, name=f"v{version}.yaml", body={"resources": [
        {"kind": "file", "path": "version.txt", "content": f"{version}\n"},
        {"kind": "envfile", "path": "app.env", "values": {"VERSION": version},
         "secrets": {"TOKEN": {"from_env": "ROLLBACK_TOKEN"}}},
        {"kind": "git", "path": "src", "repo": upstream.url, "ref": ref},
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": [f"provdemo=={version}"], "index_url": index},
    ]})


def test_rollback_returns_to_the_previous_generation(host: TargetHost, tmp_path: Path, upstream: UpstreamRepo,
                                                     package_index: str) -> None:
    environ = {"ROLLBACK_TOKEN": "tok-rollback-123"}
    old = _manifest(tmp_path, host, upstream, "1.0.0", "v1.0.0", package_index)
    assert apply(old, environ).generation == 1
    new = _manifest(tmp_path, host, upstream, "2.0.0", "v1.1.0", package_index)
    assert apply(new, environ).generation == 2

    report = HostSession(load_manifest(new), environ=environ).rollback()
    assert report.ok and report.rollback_to == 1 and report.generation == 3
    assert host.read("version.txt") == "1.0.0\n"
    env = host.read("app.env")
    assert "VERSION=1.0.0" in env and "TOKEN=tok-rollback-123" in env
    head = host.run(["git", "-C", host.path("src"), "rev-parse", "HEAD"]).stdout.strip()
    assert head == upstream.tags["v1.0.0"]
    version = host.run([host.path("venv/bin/python"), "-c",
                        "import importlib.metadata as m; print(m.version('provdemo'))"]).stdout.strip()
    assert version == "1.0.0"
    # The old manifest now matches the host; the new one shows the way forward again.
    assert plan(old, environ).exit_code() == 0
    assert plan(new, environ).exit_code() == 2

    forward = HostSession(load_manifest(new), environ=environ).rollback(to=2)
    assert forward.ok and host.read("version.txt") == "2.0.0\n"


def test_rollback_without_history_is_a_clear_error(host: TargetHost, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, host, {"resources": [{"kind": "file", "path": "x", "content": "x"}]})
    apply(manifest)
    with pytest.raises(AgentError, match="no earlier successful generation to roll back to"):
        HostSession(load_manifest(manifest)).rollback()
    with pytest.raises(AgentError, match=r"generation 7 does not exist on the host \(have: 1\)"):
        HostSession(load_manifest(manifest)).rollback(to=7)
