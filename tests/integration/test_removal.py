"""Removal: resources dropped from the manifest or marked `state: absent` are planned as destroy (with their
bytes) and removed by apply; models stay without --prune; what the manifest does not know is listed as
unmanaged and left alone; links are removed as links, never followed out of the root. Real git, pip, HTTP,
over every transport."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.engine import HostSession, PlanReport
from provisioner.manifest import load_manifest
from tests.support.gitrepos import UpstreamRepo, make_upstream
from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.runs import apply, plan
from tests.support.servers import serve_directory

LORA = os.urandom(256 * 1024 + 3)
BLOB = os.urandom(64 * 1024 + 5)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "style.safetensors").write_bytes(LORA)
    (served / "blob.bin").write_bytes(BLOB)
    with serve_directory(served) as base:
        yield base


def _full(upstream: UpstreamRepo, index: str, base: str) -> list[dict[str, Any]]:
    return [
        {"kind": "directory", "path": "ComfyUI/custom_nodes"},
        {"kind": "file", "path": "notes.txt", "content": "hello\n"},
        {"kind": "git", "path": "ComfyUI/custom_nodes/plugin", "repo": upstream.url, "ref": "v1.0.0",
         "notify": ["restarted"]},
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "name": "base", "packages": ["provdep==1.0.0"], "index_url": index},
        {"kind": "pip", "venv": "venv", "name": "demo", "packages": ["provdemo==1.0.0"], "index_url": index},
        {"kind": "download", "path": "ComfyUI/models/loras/style.safetensors", "url": f"{base}/style.safetensors"},
        {"kind": "download", "path": "data/blob.bin", "url": f"{base}/blob.bin"},
    ]


HANDLERS = {"restarted": {"argv": ["sh", "-c", "echo x >> restarts.log"]}}


def _write(tmp_path: Path, host: TargetHost, resources: list[dict[str, Any]], name: str = "m.yaml") -> Path:
    return write_manifest(tmp_path, host, {"resources": resources, "handlers": HANDLERS}, name=name)


def _rows(report: PlanReport) -> dict[str, dict[str, Any]]:
    return {r.id: r.as_json() for r in report.removals}


def test_dropped_resources_are_destroyed_and_models_need_prune(host: TargetHost, tmp_path: Path,
                                                               upstream: UpstreamRepo, package_index: str,
                                                               files: str) -> None:
    full = _full(upstream, package_index, files)
    first = apply(_write(tmp_path, host, full))
    assert first.ok, first.as_json()
    assert installed_version(host, "provdemo") == "1.0.0"
    reduced = _write(tmp_path, host, [full[0], full[3], full[4]], name="reduced.yaml")

    report = plan(reduced)
    rows = _rows(report)
    assert report.exit_code() == 2
    assert rows["file:notes.txt"]["status"] == "destroy" and rows["file:notes.txt"]["bytes"] == 6
    assert rows["download:data/blob.bin"]["status"] == "destroy"
    assert rows["download:data/blob.bin"]["bytes"] == len(BLOB)
    plugin = rows["git:ComfyUI/custom_nodes/plugin"]
    assert plugin["status"] == "destroy" and plugin["bytes"] > 0
    assert rows["pip:venv#demo"]["status"] == "destroy"
    lora = rows["download:ComfyUI/models/loras/style.safetensors"]
    assert lora["status"] == "kept" and lora["large"] and lora["bytes"] == len(LORA)
    assert "would remove with --prune" in lora["reason"]
    # The JSON form carries the same rows, structured.
    as_json = json.loads(json.dumps(report.as_json()))
    assert {r["id"] for r in as_json["destroy"]} == set(rows)

    applied = apply(reduced)
    assert applied.ok, applied.as_json()
    assert not host.exists("notes.txt") and not host.exists("data/blob.bin")
    assert not host.exists("ComfyUI/custom_nodes/plugin")
    assert installed_version(host, "provdemo") is None
    assert installed_version(host, "provdep") == "1.0.0"  # still pinned by the other pip resource
    assert host.read("restarts.log").count("x") == 2  # once for the clone, once for its removal
    assert host.exists("ComfyUI/models/loras/style.safetensors")

    again = plan(reduced)
    assert again.exit_code() == 0, again.as_json()
    assert [r.id for r in again.removals] == ["download:ComfyUI/models/loras/style.safetensors"]

    pruned_plan = plan(reduced, prune=True)
    assert pruned_plan.exit_code() == 2
    assert _rows(pruned_plan)["download:ComfyUI/models/loras/style.safetensors"]["status"] == "destroy"
    pruned = apply(reduced, prune=True)
    assert pruned.ok and not host.exists("ComfyUI/models/loras/style.safetensors")
    final = plan(reduced, prune=True)
    assert final.exit_code() == 0 and final.removals == []


def test_state_absent_removes_a_model_without_prune(host: TargetHost, tmp_path: Path, files: str) -> None:
    model = {"kind": "download", "path": "ComfyUI/models/loras/style.safetensors", "url": f"{files}/style.safetensors"}
    assert apply(_write(tmp_path, host, [model])).ok
    absent = _write(tmp_path, host, [dict(model, state="absent")], name="absent.yaml")
    report = plan(absent)
    row = _rows(report)["download:ComfyUI/models/loras/style.safetensors"]
    assert report.exit_code() == 2 and row["status"] == "destroy" and row["bytes"] == len(LORA)
    assert "state: absent" in row["reason"]
    assert apply(absent).ok
    assert not host.exists("ComfyUI/models/loras/style.safetensors")
    assert plan(absent).exit_code() == 0


def _comfyui_like(tmp_path: Path) -> UpstreamRepo:
    """A checkout that tracks files in custom_nodes and models and ignores the rest, as ComfyUI does."""
    repo = make_upstream(tmp_path / "upstreams", "comfy")
    repo.commit({"main.py": "print('comfy')\n", "custom_nodes/example_node.py.example": "# example\n",
                 "models/loras/put_loras_here": ""}, "files")
    repo.commit({".gitignore": "/models/\n/custom_nodes/\n!custom_nodes/example_node.py.example\n"}, "ignore",
                tag="v1.0.0")
    return repo


def test_unmanaged_nodes_and_models_are_listed_and_left_alone(host: TargetHost, tmp_path: Path,
                                                             upstream: UpstreamRepo, files: str) -> None:
    comfy = _comfyui_like(tmp_path)
    manifest = _write(tmp_path, host, [
        {"kind": "git", "path": "ComfyUI", "repo": comfy.url, "ref": "v1.0.0"},
        {"kind": "git", "path": "ComfyUI/custom_nodes/plugin", "repo": upstream.url, "ref": "v1.0.0"},
        {"kind": "download", "path": "ComfyUI/models/loras/style.safetensors", "url": f"{files}/style.safetensors"},
    ])
    assert apply(manifest).ok
    host.sh(f"mkdir -p {host.path('ComfyUI/custom_nodes/ManagerNode')} && "
            f"printf 'print(1)\\n' > {host.path('ComfyUI/custom_nodes/ManagerNode/__init__.py')} && "
            f"printf 'lora!' > {host.path('ComfyUI/models/loras/colleague.safetensors')}")
    report = plan(manifest)
    assert report.exit_code() == 0, report.as_json()
    listed = {(u.path, u.kind, u.bytes) for u in report.unmanaged}
    # The checkout's own example node and placeholder are not listed; the plugin and the model are managed.
    assert listed == {("ComfyUI/custom_nodes/ManagerNode", "custom_node", 9),
                      ("ComfyUI/models/loras/colleague.safetensors", "model", 5)}
    assert report.as_json()["unmanaged"][0].keys() >= {"path", "kind", "bytes"}
    assert apply(manifest, prune=True).ok
    assert host.read("ComfyUI/models/loras/colleague.safetensors") == "lora!"
    assert host.exists("ComfyUI/custom_nodes/ManagerNode/__init__.py")


def test_links_planted_to_escape_the_root_are_not_followed(host: TargetHost, tmp_path: Path,
                                                           upstream: UpstreamRepo) -> None:
    outside = host.path("../outside")
    manifest = _write(tmp_path, host, [
        {"kind": "file", "path": "conf/app.txt", "content": "app\n"},
        {"kind": "git", "path": "src", "repo": upstream.url, "ref": "v1.0.0"},
    ])
    assert apply(manifest).ok
    host.sh(f"mkdir -p {outside} && printf keep > {outside}/precious.txt && "
            f"rm {host.path('conf/app.txt')} && ln -s {outside}/precious.txt {host.path('conf/app.txt')} && "
            f"ln -s {outside} {host.path('src/escape')}")
    emptied = _write(tmp_path, host, [], name="empty.yaml")
    rows = _rows(plan(emptied))
    assert rows["file:conf/app.txt"]["status"] == "destroy" and rows["file:conf/app.txt"]["bytes"] < 100
    # The planted link is untracked in the checkout: local work, kept unless --force.
    assert rows["git:src"]["status"] == "kept" and "escape" in rows["git:src"]["reason"]
    assert apply(emptied).ok and host.exists("src/README.md")
    assert _rows(plan(emptied, force=True))["git:src"]["status"] == "destroy"
    assert apply(emptied, force=True).ok
    assert not host.exists("src")
    assert host.run(["test", "-L", host.path("conf/app.txt")], check=False).returncode != 0
    assert host.read("../outside/precious.txt") == "keep"
    assert plan(emptied).exit_code() == 0 and plan(emptied).removals == []


def test_a_generation_edited_on_the_host_removes_nothing(host: TargetHost, tmp_path: Path) -> None:
    manifest = _write(tmp_path, host, [{"kind": "file", "path": "a.txt", "content": "a\n"}])
    assert apply(manifest).ok
    host.sh(f"printf victim > {host.path('victim.txt')}")
    generation = host.path(".provision/generations/000001.json")
    record = json.loads(host.read(".provision/generations/000001.json"))
    record["resources"].append({"id": "file:victim.txt", "kind": "file", "digest": "0" * 64, "notify": [],
                                "spec": {"kind": "file", "path": "victim.txt", "mode": None, "owner": None,
                                         "group": None, "state": "present", "sha256": "0" * 64}})
    host.sh(f"cat > {generation} <<'EOF'\n{json.dumps(record)}\nEOF")
    report = plan(_write(tmp_path, host, [{"kind": "file", "path": "a.txt", "content": "a\n"}], name="same.yaml"))
    row = _rows(report)["file:victim.txt"]
    assert row["status"] == "kept" and "does not vouch" in row["reason"] and report.exit_code() == 0
    assert apply(manifest).ok and host.read("victim.txt") == "victim"


def test_rollback_brings_back_what_a_destroy_removed(host: TargetHost, tmp_path: Path, files: str) -> None:
    a = {"kind": "file", "path": "a.txt", "content": "a\n"}
    blob = {"kind": "download", "path": "data/blob.bin", "url": f"{files}/blob.bin"}
    both = _write(tmp_path, host, [a, blob, {"kind": "file", "path": "b.txt", "content": "b\n"}])
    assert apply(both).generation == 1
    only_a = _write(tmp_path, host, [a, blob], name="a.yaml")
    assert apply(only_a).generation == 2 and not host.exists("b.txt")
    back = HostSession(load_manifest(only_a)).rollback()
    assert back.ok and back.rollback_to == 1 and host.read("b.txt") == "b\n"
    # A rollback does not fetch downloads again, and does not take them for dropped either.
    assert host.exists("data/blob.bin")
    # Forward again: generation 3 (the rollback) is trusted, so b.txt is destroyed once more.
    assert apply(only_a).ok and not host.exists("b.txt")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True, timeout=180)


def test_cli_plan_shows_destroy_kept_and_unmanaged_and_prune_removes(host: TargetHost, tmp_path: Path,
                                                                     files: str) -> None:
    model = {"kind": "download", "path": "ComfyUI/models/loras/style.safetensors", "url": f"{files}/style.safetensors"}
    note = {"kind": "file", "path": "notes.txt", "content": "hello\n"}
    assert _cli("apply", str(_write(tmp_path, host, [model, note]))).returncode == 0
    host.sh(f"printf 'lora!' > {host.path('ComfyUI/models/loras/colleague.safetensors')}")
    empty = _write(tmp_path, host, [{"kind": "directory", "path": "ComfyUI/models/loras"}], name="empty.yaml")

    text = _cli("plan", str(empty))
    assert text.returncode == 2, text.stderr
    assert "- destroy file:notes.txt" in text.stdout and "6 B go" in text.stdout
    assert "would remove with --prune: 256.0 KiB" in text.stdout
    assert "? unmanaged model ComfyUI/models/loras/colleague.safetensors (5 B)" in text.stdout
    assert "1 to destroy (6 B)" in text.stdout and "1 kept, 1 unmanaged" in text.stdout

    assert _cli("apply", str(empty)).returncode == 0
    kept = json.loads(_cli("plan", str(empty), "--json").stdout)
    assert [(r["kind"], r["status"], r["bytes"]) for r in kept["destroy"]] == [("download", "kept", len(LORA))]
    assert kept["unmanaged"] == [{"path": "ComfyUI/models/loras/colleague.safetensors", "kind": "model",
                                  "bytes": 5, "link": False}]
    pruned = _cli("apply", str(empty), "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert not host.exists("ComfyUI/models/loras/style.safetensors")
    assert host.read("ComfyUI/models/loras/colleague.safetensors") == "lora!"
    clean = _cli("plan", str(empty), "--prune", "--json")
    assert clean.returncode == 0 and json.loads(clean.stdout)["destroy"] == []


def test_a_dropped_service_is_stopped_through_its_record(host: TargetHost, tmp_path: Path) -> None:
    script = {"kind": "file", "path": "app/sleep.py", "content": "import time\ntime.sleep(300)\n"}
    service = {"kind": "service", "name": "app", "manager": "process", "argv": ["python3", "app/sleep.py"],
               "settle_seconds": 0.5}
    assert apply(_write(tmp_path, host, [script, service])).ok
    pid = int(json.loads(host.read(".provision/services/app.json"))["pid"])
    try:
        only_script = _write(tmp_path, host, [script], name="no-service.yaml")
        rows = _rows(plan(only_script))
        assert rows["service:app"]["status"] == "destroy"
        assert apply(only_script).ok
        assert not host.exists(".provision/services/app.json")
        state = host.run(["sh", "-c", f"cat /proc/{pid}/stat 2>/dev/null | cut -d' ' -f3"]).stdout.strip()
        assert state in ("", "Z"), state  # gone (or a zombie of an exited agent's child, reaped by init)
        assert plan(only_script).exit_code() == 0
    finally:
        host.run(["kill", str(pid)], check=False)


def test_a_destroy_killed_after_setting_a_folder_aside_is_finished_by_the_next_apply(
        host: TargetHost, tmp_path: Path, upstream: UpstreamRepo) -> None:
    checkout = {"kind": "git", "path": "src", "repo": upstream.url, "ref": "v1.0.0"}
    keep = {"kind": "file", "path": "keep.txt", "content": "k\n"}
    assert apply(_write(tmp_path, host, [checkout, keep])).ok
    # What a destroy killed between its rename and its delete leaves: the folder aside, under the name of a
    # run that is no longer alive (PID 999999999 never is), and no new generation.
    aside = host.path("src.provision-old-999999999.1")
    host.run(["mv", host.path("src"), aside])
    reduced = _write(tmp_path, host, [keep], name="reduced.yaml")
    report = plan(reduced)
    assert report.removals == [] and report.exit_code() == 0  # nothing of it is left in use
    # The interrupted run wrote no generation: the next apply still knows src, and sweeps what was set aside.
    host.run(["mv", aside, host.path("src")])
    host.run(["mkdir", "-p", aside])
    assert [r.id for r in plan(reduced).removals] == ["git:src"]
    assert apply(reduced).ok
    assert not host.exists("src") and not host.exists("src.provision-old-999999999.1")
    assert plan(reduced).exit_code() == 0
