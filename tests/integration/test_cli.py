"""The `provision` command as a user runs it: exit codes, JSON output, errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

PROVISION = [sys.executable, "-m", "provisioner"]
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROVISION, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)


def _manifest(tmp_path: Path, resources: list[dict[str, object]]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "cli", "target": {"root": str(tmp_path / "root")},
                                    "resources": resources}))
    return path


def test_plan_apply_exit_codes_and_json(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, [{"kind": "file", "path": "a.txt", "content": "a\n"}])
    plan = run("plan", str(manifest))
    assert plan.returncode == 2, plan.stderr
    assert "+ create  file:a.txt" in plan.stdout
    assert "Plan: 1 to create, 0 to change, 0 drifted, 0 ok" in plan.stdout

    dry = run("apply", "--dry-run", "--json", str(manifest))
    assert dry.returncode == 2
    assert json.loads(dry.stdout)["summary"] == {"create": 1, "change": 0, "drift": 0, "destroy": 0,
                                                 "kept": 0, "unmanaged": 0, "ok": 0, "error": 0}
    assert not (tmp_path / "root" / "a.txt").exists(), "--dry-run changes nothing"

    applied = run("apply", "--json", str(manifest))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    result = json.loads(applied.stdout)
    assert result["ok"] and result["generation"] == 1 and result["summary"] == {
        "changed": 1, "destroyed": 0, "ok": 0, "failed": 0, "skipped": 0}

    again = run("apply", str(manifest))
    assert again.returncode == 0
    assert "Applied: 0 changed, 1 ok" in again.stdout
    assert run("plan", str(manifest)).returncode == 0

    (tmp_path / "root" / "a.txt").write_text("b\n")
    drift = run("plan", "--json", str(manifest))
    assert drift.returncode == 2
    assert [r["status"] for r in json.loads(drift.stdout)["resources"]] == ["drifted"]


def test_bad_manifest_is_reported_without_traceback_and_nothing_changes(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"name: bad\ntarget:\n  root: {tmp_path / 'root'}\nresources:\n"
                        "  - kind: file\n    path: ../../etc/x\n    content: x\n")
    for command in ("validate", "plan", "apply"):
        done = run(command, str(manifest))
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert f"{manifest}:6:5: resources[0].path:" in done.stderr
        assert "must not contain '..' segments" in done.stderr
    assert not (tmp_path / "root").exists()


def test_failed_apply_exits_1_with_the_reason(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, [{"kind": "command", "name": "fail", "argv": ["false"], "creates": "x"}])
    done = run("apply", str(manifest))
    assert done.returncode == 1
    assert "x failed  command:fail" in done.stdout
    assert "command false failed (exit 1)" in done.stdout


def test_ledger_records_each_run(tmp_path: Path) -> None:
    ledger = {"PROVISION_LEDGER": f"sqlite:///{tmp_path}/runs.sqlite"}
    manifest = _manifest(tmp_path, [{"kind": "file", "path": "a.txt", "content": "a\n"}])
    assert run("plan", str(manifest), env=ledger).returncode == 2
    assert run("apply", str(manifest), env=ledger).returncode == 0
    assert run("apply", str(manifest), env=ledger).returncode == 0
    runs = json.loads(run("history", "--json", env=ledger).stdout)["runs"]
    assert [(r["command"], r["status"], r["changed"], r["generation"]) for r in runs] == [
        ("apply", "ok", 0, None), ("apply", "ok", 1, 1), ("plan", "drift", 1, None)]
    assert {r["host"] for r in runs} == {"local"}
    assert run("history", "elsewhere", env=ledger).stdout.strip() == "No runs recorded for elsewhere."


def test_validate_schema_generations_and_facts(tmp_path: Path) -> None:
    assert run("validate", str(REPO / "manifests" / "local.yaml")).returncode == 0
    stack = run("validate", str(REPO / "manifests" / "rtx4090.yaml"))
    assert stack.returncode == 0 and "valid (21 resources)" in stack.stdout, stack.stderr
    schema = json.loads(run("schema").stdout)
    assert {"target", "gpu", "torch", "nunchaku", "comfyui", "models", "service", "checks"} <= set(schema["properties"])

    manifest = _manifest(tmp_path, [{"kind": "directory", "path": "d"}])
    assert run("apply", str(manifest)).returncode == 0
    listing = run("generations", "--json", str(manifest))
    assert [g["generation"] for g in json.loads(listing.stdout)["generations"]] == [1]

    facts = json.loads(run("facts", "local", "--root", str(tmp_path)).stdout)
    assert facts["arch"] and facts["root"] == str(tmp_path) and facts["disk_free_bytes"] > 0
    assert facts["nvidia"]["gpus"] == [] or facts["nvidia"]["driver"]


def test_local_manifest_converges_from_the_readme(tmp_path: Path, package_index: str) -> None:
    """The README's main command, offline: the same manifest with its pins served by the test index."""
    (tmp_path / "pins.yaml").write_text(yaml.safe_dump({
        "extends": str(REPO / "manifests" / "local.yaml"), "name": "local",
        "vars": {"python_packages": ["provdemo==1.0.0"], "pip_index_url": package_index},
    }))
    first = run("apply", "pins.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / ".provision-root" / "venv" / "bin" / "python").exists()
    assert (tmp_path / ".provision-root" / "models" / "diffusion_models").is_dir()
    second = run("apply", "pins.yaml", cwd=tmp_path)
    assert "Applied: 0 changed" in second.stdout
    assert run("plan", "pins.yaml", cwd=tmp_path).returncode == 0
