"""What an interrupted step leaves is seen and repaired: a venv without a working pip is rebuilt, with its
packages, in one apply; the leftovers of a dead run are swept, those of a live one are kept; a `.part`
left by the download of another file is fetched again from the start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.fake_hub import HubState, serve_hub
from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.runs import apply, changed, pending, plan


def _local(tmp_path: Path) -> TargetHost:
    return TargetHost("local", "local", str(tmp_path / "root"))


def test_a_venv_without_a_working_pip_is_broken_and_rebuilt_with_its_packages(tmp_path: Path,
                                                                               package_index: str) -> None:
    host = _local(tmp_path)
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": package_index},
    ]})
    assert apply(manifest).ok
    site = next(Path(host.path("venv/lib")).glob("python3*/site-packages"))
    # What a venv creation killed in ensurepip can leave: bin/python and pyvenv.cfg, pip in part.
    for info in site.glob("pip-*.dist-info"):
        (info / "INSTALLER").unlink()
        (info / "RECORD").unlink()
    shutil.rmtree(site / "pip" / "_internal")
    assert subprocess.run([host.path("venv/bin/python"), "-m", "pip", "--version"], capture_output=True).returncode

    report = plan(manifest)
    # The pip resource sees pip's own install cut off too.
    assert pending(report) == {"venv:venv": ["venv"], "pip:venv": ["interrupted"]}
    reason = report.resources[0]["changes"][0]["reason"]
    assert "pip" in reason and "rebuilt" in reason, reason
    fixed = apply(manifest)
    assert fixed.ok, fixed.failures
    # One apply: the pip resource, ok against the old venv, is probed again once the venv is rebuilt.
    assert changed(fixed) == ["venv:venv", "pip:venv"]
    assert installed_version(host, "provdemo") == "1.0.0"
    assert plan(manifest).exit_code() == 0
    pip = subprocess.run([host.path("venv/bin/pip"), "--version"], capture_output=True, text=True)
    assert pip.returncode == 0 and host.path("venv") in pip.stdout, "the launchers name the venv's own path"
    assert not [p for p in Path(host.root).iterdir() if ".provision-" in p.name]


def _identity(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
        return f"{pid}.{handle.read().rsplit(')', 1)[1].split()[19]}"


def test_leftovers_of_a_dead_run_are_swept_and_those_of_a_live_one_kept(tmp_path: Path) -> None:
    host = _local(tmp_path)
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "file", "path": "app/config.txt", "content": "one\n"},
        {"kind": "directory", "path": "venv"},
    ]})
    assert apply(manifest).ok
    finished = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    dead = _identity(finished.pid)
    finished.wait()
    alive = _identity(os.getpid())  # this test's process plays a run still at work on the root
    root = Path(host.root)
    planted = {
        "dead temp file": root / "app" / f".provision-tmp-{dead}-x1y2z3",
        "dead staging venv": root / f"venv.provision-staging-{dead}",
        "dead aside venv": root / f"venv.provision-old-{dead}",
        "dead run's temp folder": root / ".provision" / "tmp" / dead,
        "dead generation temp": root / ".provision" / "generations" / f".provision-tmp-{dead}-abc",
    }
    live = {
        "live temp file": root / "app" / f".provision-tmp-{alive}-q9w8e7",
        "live staging venv": root / f"venv.provision-staging-{alive}",
        "live run's temp folder": root / ".provision" / "tmp" / alive,
    }
    for path in [*planted.values(), *live.values()]:
        path.parent.mkdir(parents=True, exist_ok=True)
        if "temp file" in str(path) or "generation" in str(path.parent):
            path.write_text("partial")
        else:
            (path / "bin").mkdir(parents=True)
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "file", "path": "app/config.txt", "content": "two\n"},
        {"kind": "directory", "path": "venv"},
    ]})
    assert apply(manifest).ok
    assert [what for what, path in planted.items() if os.path.lexists(path)] == []
    assert [what for what, path in live.items() if not os.path.lexists(path)] == []
    assert host.read("app/config.txt") == "two\n"


def test_a_part_file_of_another_download_is_fetched_again_in_the_same_apply(tmp_path: Path) -> None:
    host = _local(tmp_path)
    state = HubState()
    old, new = os.urandom(300_000), os.urandom(300_000)
    state.add("org/m", "old.bin", old)
    sha = state.add("org/m", "new.bin", new)
    with serve_hub(state) as endpoint:
        manifest = write_manifest(tmp_path, host, {"resources": [
            {"kind": "download", "path": "models/m.bin", "url": f"{endpoint}/org/m/resolve/main/new.bin",
             "sha256": sha, "size": len(new)}]})
        # What a run killed while it fetched the file the manifest named before leaves behind.
        part = Path(host.path("models/m.bin.part"))
        part.parent.mkdir(parents=True)
        part.write_bytes(old[:100_000])
        report = apply(manifest)
        assert report.ok, report.failures
        assert Path(host.path("models/m.bin")).read_bytes() == new
        assert [c.range for c in state.calls] == ["bytes=100000-", None], "resumed first, then from the start"
        assert not part.exists() and plan(manifest).exit_code() == 0
