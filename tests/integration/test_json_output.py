"""Every command's --json carries format_version; plan and apply JSON validate against their models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from provisioner.render.json_output import (
    FORMAT_VERSION,
    ApplyOutput,
    GenerationsOutput,
    HistoryOutput,
    PlanCounts,
    PlanOutput,
)

PROVISION = [sys.executable, "-m", "provisioner"]
TEMPLATES = Path(str(resources.files("comfyui_workflow_templates_json") / "templates"))
REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROVISION, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=180)


def _document(done: subprocess.CompletedProcess[str], codes: tuple[int, ...]) -> dict[str, object]:
    assert done.returncode in codes, [*done.args[3:], done.stdout, done.stderr]
    assert done.stdout.startswith("{"), [*done.args[3:], done.stdout, done.stderr]
    data = json.loads(done.stdout)
    assert isinstance(data, dict), f"{done.args[3:]}: a JSON object, so it can carry its version"
    return data


def test_every_json_output_carries_format_version(tmp_path: Path) -> None:
    env = {"PROVISION_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite'}"}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"name": "json", "target": {"root": str(tmp_path / "root")},
                                        "resources": [{"kind": "file", "path": "a.txt", "content": "a\n"}]}))
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump({"defaults": {"manifest": "m.yaml"},
                                     "hosts": {"one": {"connection": "local", "root": str(tmp_path / "fleet-one")}}}))
    facts = tmp_path / "facts.json"
    workflow = TEMPLATES / "flux_dev_full_text_to_image.json"

    documents = {
        "plan": _document(_run("plan", "--json", str(manifest), env=env), (2,)),
        "apply": _document(_run("apply", "--json", str(manifest), env=env), (0,)),
        "apply --dry-run": _document(_run("apply", "--dry-run", "--json", str(manifest), env=env), (0,)),
        "generations": _document(_run("generations", "--json", str(manifest), env=env), (0,)),
        "history": _document(_run("history", "--json", env=env), (0,)),
        "check": _document(_run("check", "--json", "--only", "gpu", str(manifest), env=env), (0, 2)),
        "fleet plan": _document(_run("fleet", "plan", "--json", str(fleet), env=env), (0, 1, 2)),
        "fleet apply": _document(_run("fleet", "apply", "--json", str(fleet), env=env), (0,)),
        "workflow analyze": _document(_run("workflow", "analyze", "--json", str(workflow), env=env), (0, 2)),
    }
    facts_done = _run("facts", "local", "--root", str(tmp_path), env=env)
    documents["facts"] = _document(facts_done, (0,))
    # A second generation, so that there is one to go back to.
    manifest.write_text(yaml.safe_dump({"name": "json", "target": {"root": str(tmp_path / "root")},
                                        "resources": [{"kind": "file", "path": "a.txt", "content": "b\n"}]}))
    assert _document(_run("apply", "--json", str(manifest), env=env), (0,))["generation"] == 2
    documents["rollback"] = _document(_run("rollback", "--json", str(manifest), env=env), (0,))
    facts.write_text(facts_done.stdout)
    stack = REPO / "manifests" / "rtx4090.yaml"
    documents["resolve"] = _document(_run("resolve", "--json", "--facts", str(facts), str(stack), env=env), (0, 1))

    assert {name: d.get("format_version") for name, d in documents.items()} == dict.fromkeys(documents, FORMAT_VERSION)
    assert documents["fleet apply"]["summary"] == {"ok": 1, "failed": 0, "unreachable": 0, "not-run": 0,
                                                   "skipped": 0}
    HistoryOutput.model_validate(documents["history"])
    GenerationsOutput.model_validate(documents["generations"])


def test_plan_and_apply_json_validate_against_their_models(tmp_path: Path) -> None:
    env = {"PROVISION_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite'}"}
    manifest = tmp_path / "m.yaml"
    resources_ = [{"kind": "file", "path": "a.txt", "content": "new\n", "mode": "0600"},
                  {"kind": "directory", "path": "d"}]
    manifest.write_text(yaml.safe_dump({"name": "json", "target": {"root": str(tmp_path / "root")},
                                        "resources": resources_}))
    (tmp_path / "root" / "d").mkdir(parents=True)
    (tmp_path / "root" / "a.txt").write_text("old\n")

    plan = PlanOutput.model_validate(_document(_run("plan", "--json", str(manifest), env=env), (2,)))
    assert plan.summary == PlanCounts(change=1, ok=1), "every count is there, zero or not"
    assert plan.summary.model_dump() == {"create": 0, "change": 1, "drift": 0, "destroy": 0, "kept": 0,
                                         "unmanaged": 0, "ok": 1, "error": 0}
    content = next(c for c in plan.changes if c.field == "content")
    assert (content.kind, content.key, content.action) == ("file", "a.txt", "update")
    assert content.old != content.new and content.reason, "old, new and the reason are fields of their own"
    assert {c.field for c in plan.changes} == {"content", "mode"}
    assert [r.id for r in plan.resources] == ["file:a.txt", "directory:d"]

    applied = ApplyOutput.model_validate(_document(_run("apply", "--json", str(manifest), env=env), (0,)))
    assert applied.summary.model_dump() == {"changed": 1, "destroyed": 0, "ok": 1, "failed": 0, "skipped": 0}
    assert {(c.kind, c.key, c.field) for c in applied.changes} == {("file", "a.txt", "content"),
                                                                   ("file", "a.txt", "mode")}
    assert applied.unconverged == [] and applied.ok
