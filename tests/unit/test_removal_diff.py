"""The removal diff: what goes, what stays and why, on a real folder; which records are trusted to remove."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from provisioner.agent import orphans, records, removal, state
from provisioner.agent.protocol import Context, ResourceFailure
from provisioner.catalog import load_catalog
from provisioner.engine import PlanReport, expand_stack
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.manifest.model import ModelSpec
from provisioner.resolve import render_resolution, resolve
from provisioner.resolve.models import plan_models
from provisioner.resources.specs import CommandSpec, FileSpec, ServiceUnitSpec

FOLDERS = ["loras", "checkpoints", "diffusion_models"]


def _request(*resources: dict[str, Any], prune: bool = False, trusted: Any = None) -> dict[str, Any]:
    return {"resources": list(resources), "options": {"prune": prune}, "trusted": trusted or {},
            "watch": {"model_folders": FOLDERS, "models_roots": ["shared-models"]}}


def _resource(kind: str, **spec: Any) -> dict[str, Any]:
    key = spec.get("path") or spec.get("venv") or spec.get("name")
    return {"id": f"{kind}:{key}", "kind": kind, "digest": "d", "notify": [], "spec": {"kind": kind, **spec}}


def _write(root: Path, relative: str, size: int) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_a_dropped_file_is_destroyed_with_its_bytes(tmp_path: Path) -> None:
    _write(tmp_path, "notes.txt", 42)
    row = removal.row(_resource("file", path="notes.txt"), Context(str(tmp_path)), _request(), explicit=False)
    assert row["status"] == "destroy" and row["bytes"] == 42 and row["changes"][0]["action"] == "destroy"
    assert "no longer in the manifest" in row["reason"]


def test_nothing_left_is_ok(tmp_path: Path) -> None:
    row = removal.row(_resource("file", path="gone.txt"), Context(str(tmp_path)), _request(), explicit=False)
    assert row["status"] == "ok"


@pytest.mark.parametrize("path", ["ComfyUI/models/loras/a.safetensors", "shared-models/vae/b.safetensors"])
def test_models_stay_without_prune_and_go_with_it_or_when_absent(tmp_path: Path, path: str) -> None:
    _write(tmp_path, path, 10)
    ctx, model = Context(str(tmp_path)), _resource("download", path=path)
    kept = removal.row(model, ctx, _request(), explicit=False)
    assert kept["status"] == "kept" and kept["large"] and kept["reason"].startswith("would remove with --prune")
    assert removal.row(model, ctx, _request(prune=True), explicit=False)["status"] == "destroy"
    assert removal.row(model, ctx, _request(), explicit=True)["status"] == "destroy"


def test_a_big_download_outside_the_model_folders_is_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(removal, "LARGE_BYTES", 100)
    _write(tmp_path, "data/big.bin", 100)
    _write(tmp_path, "data/small.bin", 99)
    ctx = Context(str(tmp_path))
    assert removal.row(_resource("download", path="data/big.bin"), ctx, _request(), explicit=False)["status"] == "kept"
    assert removal.row(_resource("download", path="data/small.bin"), ctx, _request(),
                       explicit=False)["status"] == "destroy"


def test_a_folder_goes_only_when_nothing_else_is_left_in_it(tmp_path: Path) -> None:
    _write(tmp_path, "cache/a.bin", 1)
    _write(tmp_path, "cache/sub/b.bin", 1)
    ctx, folder = Context(str(tmp_path)), _resource("directory", path="cache")
    kept = removal.row(folder, ctx, _request(), explicit=False)
    assert kept["status"] == "kept" and "not empty (3 entries" in kept["reason"]
    going = [str(tmp_path / "cache/a.bin"), str(tmp_path / "cache/sub/b.bin")]
    assert removal.row(folder, ctx, _request(), explicit=False, going=going)["status"] == "destroy"
    assert removal.row(folder, ctx, _request(), explicit=True)["status"] == "destroy"


def test_a_link_is_removed_as_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(outside)
    ctx, resource = Context(str(root)), _resource("directory", path="escape")
    row = removal.row(resource, ctx, _request(), explicit=True)
    assert row["status"] == "destroy" and row["bytes"] == 0 and row["observed"]["link"]
    removal.destroy(resource, row["observed"], ctx)
    assert not os.path.lexists(root / "escape") and (outside / "precious").read_text() == "keep"


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "."])
def test_paths_outside_the_root_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ResourceFailure):
        removal.leaf_path(Context(str(tmp_path)), path)


def test_a_link_in_the_parent_that_leads_out_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "up").symlink_to(tmp_path)
    with pytest.raises(ResourceFailure, match="outside the target root"):
        removal.leaf_path(Context(str(tmp_path / "root")), "up/anything")


def _fake_venv(root: Path, *names: str) -> None:
    site = root / "venv/lib/python3.12/site-packages"
    (root / "venv/bin").mkdir(parents=True)
    (root / "venv/bin/python").write_text("")
    for name in names:
        info = site / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Name: {name}\nVersion: 1.0\n\n")
        (info / "RECORD").write_text("")
        (info / "INSTALLER").write_text("pip\n")


def test_a_dropped_pip_resource_leaves_torch_and_what_is_still_pinned(tmp_path: Path) -> None:
    _fake_venv(tmp_path, "torch", "nvidia-cublas", "shared", "extra")
    dropped = _resource("pip", venv="venv", packages=["torch==1.0", "nvidia-cublas==1.0", "shared==1.0", "extra"])
    still = _resource("pip", venv="venv", name="other", packages=["shared==1.0"])
    ctx = Context(str(tmp_path))
    row = removal.row(dropped, ctx, _request(still), explicit=False)
    assert row["status"] == "destroy" and row["observed"]["packages"] == ["extra"]
    explicit = removal.row(dict(dropped, spec=dict(dropped["spec"], state="absent")), ctx, _request(), explicit=True)
    assert explicit["observed"]["packages"] == ["extra", "nvidia-cublas", "shared", "torch"]


def test_only_records_the_controller_vouches_for_are_candidates_to_remove(tmp_path: Path) -> None:
    ctx = Context(str(tmp_path))
    kept, dropped = _resource("file", path="a"), _resource("file", path="b")
    generation = state.write(ctx.state_dir(), {"resources": [kept, dropped], "status": "ok"})
    vouched = {ctx.root: {str(generation): {"resources": [records.digest(kept), records.digest(dropped)]}}}
    found = orphans.candidates(_request(kept, trusted=vouched), ctx)
    assert [(c["record"]["id"], c["trusted"]) for c in found] == [("file:b", True)]
    edited = {ctx.root: {str(generation): {"resources": [records.digest(kept)]}}}
    assert [c["trusted"] for c in orphans.candidates(_request(kept, trusted=edited), ctx)] == [False]
    assert orphans.candidates(_request(kept, dropped, trusted=vouched), ctx) == []


def test_an_untrusted_orphan_is_kept_and_not_counted_as_drift(tmp_path: Path) -> None:
    ctx = Context(str(tmp_path))
    _write(tmp_path, "b", 3)
    dropped = _resource("file", path="b")
    state.write(ctx.state_dir(), {"resources": [dropped], "status": "ok"})
    rows = orphans.rows(_request(), ctx, orphans.candidates(_request(), ctx))
    assert [(r["status"], r["bytes"]) for r in rows] == [("kept", 3)] and "does not vouch" in rows[0]["reason"]
    report = PlanReport("h", str(tmp_path), "m", [{k: v for k, v in rows[0].items() if k != "observed"}], 0.0)
    assert report.exit_code() == 0 and report.pending == [] and report.as_json()["destroy"][0]["status"] == "kept"


def test_state_absent_specs() -> None:
    assert FileSpec(path="a", state="absent").content == ""
    assert ServiceUnitSpec(name="s", argv=["x"], state="absent").state == "absent"
    with pytest.raises(ValidationError, match="cannot be undone"):
        CommandSpec.model_validate({"name": "c", "argv": ["x"], "creates": "x", "state": "absent"})


def test_an_absent_model_is_resolved_apart_from_the_ones_to_install() -> None:
    specs = [ModelSpec(repo="a/b", file="keep.safetensors", url="https://example.invalid/keep", folder="loras"),
             ModelSpec(repo="a/b", file="old.safetensors", url="https://example.invalid/old", folder="loras",
                       state="absent")]
    plan = plan_models(specs, load_catalog(), None, nunchaku=False)
    assert [m.filename for m in plan.models] == ["keep.safetensors"]
    assert [m.filename for m in plan.absent] == ["old.safetensors"]


def test_a_stack_model_marked_absent_expands_to_an_absent_download(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    base = (repo / "manifests" / "rtx4090.yaml").read_text()
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"extends: {repo / 'manifests' / 'rtx4090.yaml'}\nname: absent-lora\n"
                        "models:\n  - {repo: a/b, file: old-style.safetensors, folder: loras, "
                        "url: 'https://example.invalid/old-style.safetensors', state: absent}\n")
    assert "models:" in base
    loaded = load_manifest(manifest)
    facts = load_facts(Path(__file__).resolve().parent / "facts" / "rtx4090.json")
    result = resolve(loaded.manifest, facts, load_catalog())
    assert result.ok, render_resolution(result)
    assert [m.filename for m in result.absent_models] == ["old-style.safetensors"]
    assert "old-style.safetensors" not in [m.filename for m in result.models]
    downloads = {r.spec["path"]: r.spec for r in expand_stack(loaded, facts, result).expansion.resources
                 if r.kind == "download"}
    assert downloads["ComfyUI/models/loras/old-style.safetensors"]["state"] == "absent"
    assert {s["state"] for p, s in downloads.items() if "old-style" not in p} == {"present"}


def test_a_checkout_with_local_work_is_kept_unless_forced(tmp_path: Path) -> None:
    import subprocess

    checkout = tmp_path / "src"
    checkout.mkdir()
    for argv in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
                                 "-m", "one"]):
        subprocess.run(["git", "-C", str(checkout), *argv], check=True)
    (checkout / "__pycache__").mkdir()
    (checkout / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"\0")
    ctx, resource = Context(str(tmp_path)), _resource("git", path="src")
    assert removal.row(resource, ctx, _request(), explicit=False)["status"] == "destroy"  # bytecode is not work
    (checkout / "notes.md").write_text("mine")
    kept = removal.row(resource, ctx, _request(), explicit=True)
    assert kept["status"] == "kept" and "notes.md" in kept["reason"] and "--force" in kept["reason"]
    forced = dict(_request(), options={"force": True})
    assert removal.row(resource, ctx, forced, explicit=False)["status"] == "destroy"
