"""An apply runs independent steps at once: a model download from the Hub stand-in goes on while the venv
and its packages install from a local index and a git checkout clones; what depends on what still waits.

Overlap is proven by the start/end times the agent records for each step, never by wall-clock bounds: the
Hub stand-in holds the download's body until the pip step has been seen to start (bounded: run one step at
a time and the download finishes first, and the test fails).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provisioner.engine import ApplyReport, HostSession, RunOptions
from provisioner.manifest import load_manifest
from tests.support.fake_hub import HubState, serve_hub
from tests.support.gitrepos import UpstreamRepo, make_upstream
from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.kills import GroupRun, names_under
from tests.support.runs import apply, changed, pending, plan

MODEL_BYTES = 600_000


@dataclass
class Scene:
    host: TargetHost
    hub: HubState
    endpoint: str
    upstream: UpstreamRepo
    index: str
    sha: str
    tmp: Path

    def manifest(self, repo: str | None = None, parallel: int | None = None) -> Path:
        url = f"{self.endpoint}/org/flux/resolve/main/flux.safetensors"
        return write_manifest(self.tmp, self.host, {"resources": [
            {"kind": "venv", "path": "venv"},
            {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": self.index},
            {"kind": "git", "path": "app", "repo": repo or self.upstream.url, "ref": "v1.0.0"},
            {"kind": "requirements", "venv": "venv", "file": "app/requirements.txt", "index_url": self.index},
            {"kind": "download", "path": "models/flux.safetensors", "url": url, "sha256": self.sha,
             "size": MODEL_BYTES},
        ]})


@pytest.fixture
def scene(tmp_path: Path, package_index: str) -> Iterator[Scene]:
    upstream = make_upstream(tmp_path / "upstream", "app")
    # provdep 1.0.0 is what provdemo needs too: the second pip step on the venv has work of its own to check.
    upstream.commit({"requirements.txt": "provdep==1.0.0\n", "main.py": "print('app')\n"}, "app 1.0.0",
                    tag="v1.0.0")
    hub = HubState(bytes_per_second=2_000_000)
    sha = hub.add("org/flux", "flux.safetensors", os.urandom(MODEL_BYTES))
    with serve_hub(hub) as endpoint:
        yield Scene(TargetHost("local", "local", str(tmp_path / "root")), hub, endpoint, upstream, package_index,
                    sha, tmp_path)
    if hub.hold is not None:
        hub.hold.set()  # no handler thread waits on after the test


def _rows(report: ApplyReport) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in report.resources}


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["started"] < b["ended"] and b["started"] < a["ended"])


def _apply_holding_the_download(scene: Scene, manifest: Path) -> tuple[ApplyReport, list[dict[str, Any]]]:
    """Apply with the download's body held until the pip step is seen applying; the events as they came."""
    scene.hub.hold = threading.Event()
    events: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event["event"] == "progress" and event.get("id") == "pip:venv" and event.get("phase") == "applying":
            assert scene.hub.hold is not None
            scene.hub.hold.set()

    report = HostSession(load_manifest(manifest), RunOptions()).apply(on_event)
    return report, events


def test_the_download_overlaps_the_installs_and_dependencies_wait(scene: Scene) -> None:
    report, events = _apply_holding_the_download(scene, scene.manifest())
    assert report.ok, report.as_json()
    rows = _rows(report)
    assert changed(report) == ["venv:venv", "pip:venv", "git:app", "requirements:app/requirements.txt",
                               "download:models/flux.safetensors"], "outcomes are listed in manifest order"
    download, pip = rows["download:models/flux.safetensors"], rows["pip:venv"]
    venv, git, requirements = rows["venv:venv"], rows["git:app"], rows["requirements:app/requirements.txt"]
    assert _overlap(download, pip), (download, pip)
    assert _overlap(download, venv) and _overlap(git, venv), "the clone and the download start beside the venv"
    assert pip["started"] >= venv["ended"], "a venv before its packages"
    assert requirements["started"] >= git["ended"], "a requirements file after the checkout holding it"
    # Two installer runs on one venv never run at once: the two steps share one run (the checkout was
    # cloned by the time the venv was made: test_shared_install.py), or the second waits for the first.
    shared = (requirements["started"], requirements["ended"]) == (pip["started"], pip["ended"])
    assert shared or requirements["started"] >= pip["ended"], (pip, requirements)
    # The events carry the resource id and the time, so a renderer can keep one line per resource.
    applying = [e for e in events if e["event"] == "progress" and e.get("phase") == "applying"]
    assert {e["id"] for e in applying} == set(rows) and all("at" in e for e in applying)
    assert Path(scene.host.path("models/flux.safetensors")).stat().st_size == MODEL_BYTES
    assert installed_version(scene.host, "provdemo") == "1.0.0"
    assert installed_version(scene.host, "provdep") == "1.0.0"
    second = apply(scene.manifest())
    assert second.ok and changed(second) == [] and plan(scene.manifest()).exit_code() == 0


def test_one_at_a_time_runs_in_manifest_order(scene: Scene) -> None:
    report = HostSession(load_manifest(scene.manifest()), RunOptions(parallel=1)).apply()
    assert report.ok, report.as_json()
    ran = [row for row in report.resources if row["outcome"] == "changed"]
    assert [row["id"] for row in ran] == [r["id"] for r in report.resources]
    assert all(a["ended"] <= b["started"] for a, b in itertools.pairwise(ran)), "no two steps overlap"


def test_a_failed_branch_is_reported_and_the_others_finish(scene: Scene) -> None:
    missing = (scene.tmp / "upstream" / "missing.git").as_uri()
    report, _ = _apply_holding_the_download(scene, scene.manifest(repo=missing))
    assert not report.ok and report.failures == ["git:app"]
    rows = _rows(report)
    assert rows["requirements:app/requirements.txt"]["outcome"] == "skipped"
    assert rows["requirements:app/requirements.txt"]["after"] == "git:app"
    # The branches that do not need the checkout went on, at the same time as each other.
    assert [rows[r]["outcome"] for r in ("venv:venv", "pip:venv", "download:models/flux.safetensors")] == [
        "changed"] * 3
    assert _overlap(rows["download:models/flux.safetensors"], rows["pip:venv"])
    assert "error" in rows["git:app"] and "git" in rows["git:app"]["error"]
    # What is left is exactly what failed and what needed it; the next apply with the repo fixed converges.
    assert set(pending(plan(scene.manifest(repo=missing)))) == {"git:app", "requirements:app/requirements.txt"}
    fixed = apply(scene.manifest())
    assert fixed.ok, fixed.as_json()
    assert changed(fixed) == ["git:app", "requirements:app/requirements.txt"]
    assert plan(scene.manifest()).exit_code() == 0


def test_a_sigkill_while_the_download_and_pip_run_together_converges_on_the_next_apply(scene: Scene) -> None:
    scene.hub.hold = threading.Event()  # the download stays in flight until the kill
    manifest = scene.manifest()
    run = GroupRun(["apply", str(manifest)])

    def both_in_flight(run: GroupRun) -> bool:
        pip_running = any(m.runs("-m", "pip", "install") or m.runs("install", "provdemo==1.0.0")
                          for m in run.members())
        return pip_running and bool(scene.hub.served("org/flux", "flux.safetensors"))

    run.kill_when(both_in_flight, "pip installs while the model downloads")
    assert os.path.exists(scene.host.path("models/flux.safetensors.part")), "the download was cut off"
    scene.hub.hold.set()
    scene.hub.hold = None
    report = apply(manifest)
    assert report.ok, report.as_json()
    assert "download:models/flux.safetensors" in changed(report)
    assert plan(manifest).exit_code() == 0
    assert installed_version(scene.host, "provdemo") == "1.0.0"
    assert installed_version(scene.host, "provdep") == "1.0.0"
    leftovers = [p for p in names_under(Path(scene.host.root)) if ".provision-" in p.name or p.suffix == ".part"]
    assert leftovers == []


def _two_downloads(tmp_path: Path, hub: HubState, endpoint: str) -> Path:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    resources = []
    for name in ("a.safetensors", "b.safetensors"):
        sha = hub.add("org/m", name, os.urandom(200_000))
        resources.append({"kind": "download", "path": f"models/{name}", "sha256": sha,
                          "url": f"{endpoint}/org/m/resolve/main/{name}"})
    return write_manifest(tmp_path, host, {"resources": resources})


def test_downloads_run_together_up_to_their_own_cap(tmp_path: Path) -> None:
    hub = HubState(bytes_per_second=1_000_000)
    with serve_hub(hub) as endpoint:
        manifest = _two_downloads(tmp_path, hub, endpoint)
        hub.hold = threading.Event()
        seen: set[str] = set()

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "progress" and event.get("phase") == "applying":
                seen.add(event["id"])
                if len(seen) == 2:  # both in flight: let them finish
                    assert hub.hold is not None
                    hub.hold.set()

        together = HostSession(load_manifest(manifest), RunOptions()).apply(on_event)
        assert together.ok, together.as_json()
        a, b = together.resources
        assert _overlap(a, b)
        hub.hold = None
        for path in (tmp_path / "root" / "models").iterdir():
            path.unlink()
        capped = HostSession(load_manifest(manifest), RunOptions(parallel_downloads=1)).apply()
        assert capped.ok, capped.as_json()
        a, b = capped.resources
        assert a["outcome"] == b["outcome"] == "changed" and a["ended"] <= b["started"]


def test_bad_limits_are_refused_by_the_cli(tmp_path: Path) -> None:
    hub = HubState()
    with serve_hub(hub) as endpoint:
        manifest = _two_downloads(tmp_path, hub, endpoint)
        done = subprocess.run([sys.executable, "-m", "provisioner", "apply", "--parallel", "0", str(manifest)],
                              capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--parallel" in done.stderr and "0" in done.stderr
    assert not (tmp_path / "root" / "models").exists(), "nothing was applied"
