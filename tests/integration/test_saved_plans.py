"""Saved plans over real transports: `plan -o` then `apply PLANFILE` applies exactly the plan, or refuses
(exit 1, nothing changed) when the host, the inputs or the plan file moved since."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from provisioner.cli import cli
from tests.support.fake_hub import HubState, serve_hub
from tests.support.gpu_standin import gpu_python
from tests.support.hosts import TargetHost, write_manifest

SECRET = "s3cr3t-token-value-for-plans"


@pytest.fixture(autouse=True)
def _secret_in_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PLAN_TEST_TOKEN", SECRET)
    yield


def _manifest(directory: Path, host: TargetHost, version: int) -> Path:
    (directory / "templates").mkdir(exist_ok=True)
    (directory / "templates" / "app.conf.j2").write_text("version={{ version }}\n")
    return write_manifest(directory, host, {
        "vars": {"version": version},
        "resources": [
            {"kind": "directory", "path": "data"},
            {"kind": "file", "path": "data/app.conf", "template": "app.conf.j2"},
            {"kind": "envfile", "path": "app.env", "values": {"MODE": "prod"},
             "secrets": {"TOKEN": {"from_env": "PLAN_TEST_TOKEN"}}},
        ],
    })


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _generations(host: TargetHost) -> list[str]:
    folder = Path(host.path(".provision/generations"))
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("host", ["local", "ssh", "docker"], indirect=True)
def test_saved_plan_is_applied_exactly_and_only_once(host: TargetHost, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, host, 1)
    planfile = tmp_path / "app.plan"
    planned = _run("plan", str(manifest), "-o", str(planfile))
    assert planned.exit_code == 2, planned.output
    document = json.loads(planfile.read_text())
    assert document["format_version"] == 1 and document["kind"] == "provision-plan"
    assert document["signature"].startswith("hmac-sha256:")
    pending = {r["id"] for r in document["resources"] if r["status"] != "ok"}
    assert pending == {"directory:data", "file:data/app.conf", "envfile:app.env"}
    assert SECRET not in planfile.read_text(), "a plan file never carries secrets"

    applied = _run("apply", str(planfile), "--json")
    assert applied.exit_code == 0, applied.output
    report = json.loads(applied.output)
    assert {r["id"] for r in report["resources"] if r["outcome"] == "changed"} == pending
    assert host.read("data/app.conf") == "version=1\n"
    assert f"TOKEN={SECRET}" in host.read("app.env")
    assert _run("plan", str(manifest)).exit_code == 0

    # The same plan again: the host moved (by the plan's own changes), so it is refused.
    again = _run("apply", str(planfile))
    assert again.exit_code == 1
    assert "the host moved since the plan was saved" in again.output
    assert "directory:data: planned as create, now ok" in again.output


@pytest.mark.parametrize("host", ["local", "ssh", "docker"], indirect=True)
def test_a_managed_file_edited_after_the_plan_refuses_the_apply(host: TargetHost, tmp_path: Path) -> None:
    assert _run("apply", str(_manifest(tmp_path, host, 1))).exit_code == 0
    manifest = _manifest(tmp_path, host, 2)
    planfile = tmp_path / "app.plan"
    assert _run("plan", str(manifest), "-o", str(planfile)).exit_code == 2
    before = _generations(host)
    assert len(before) == 1

    host.sh(f"echo 'edited by hand' > {host.path('data/app.conf')}")
    refused = _run("apply", str(planfile))
    assert refused.exit_code == 1
    assert "the host moved since the plan was saved; nothing was changed" in refused.output
    assert "file:data/app.conf: its state on the host changed since the plan" in refused.output
    assert "Traceback" not in refused.output
    assert host.read("data/app.conf") == "edited by hand\n"
    assert _generations(host) == before


def test_a_changed_manifest_or_template_refuses_the_apply(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    manifest = _manifest(tmp_path, host, 1)
    planfile = tmp_path / "app.plan"
    assert _run("plan", str(manifest), "-o", str(planfile)).exit_code == 2

    (tmp_path / "templates" / "app.conf.j2").write_text("version={{ version }}\nextra=1\n")
    refused = _run("apply", str(planfile))
    assert refused.exit_code == 1
    assert "the inputs of the plan changed since it was saved" in refused.output
    assert f"{(tmp_path / 'templates' / 'app.conf.j2').resolve()}: changed since the plan" in refused.output
    assert not host.exists("data")

    (tmp_path / "templates" / "app.conf.j2").write_text("version={{ version }}\n")
    document = yaml.safe_load(manifest.read_text())
    document["vars"]["version"] = 3
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    refused = _run("apply", str(planfile))
    assert refused.exit_code == 1 and f"{manifest.resolve()}: changed since the plan" in refused.output
    assert not host.exists("data")


def test_a_changed_secret_refuses_the_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    planfile = tmp_path / "app.plan"
    assert _run("plan", str(_manifest(tmp_path, host, 1)), "-o", str(planfile)).exit_code == 2
    monkeypatch.setenv("PLAN_TEST_TOKEN", "another-value")
    refused = _run("apply", str(planfile))
    assert refused.exit_code == 1 and "a secret read from the environment differs" in refused.output
    assert not host.exists("app.env")


def test_an_edited_plan_file_is_refused(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    planfile = tmp_path / "app.plan"
    assert _run("plan", str(_manifest(tmp_path, host, 1)), "-o", str(planfile)).exit_code == 2
    original = planfile.read_text()

    document = json.loads(original)
    document["resources"] = [r for r in document["resources"] if r["id"] != "envfile:app.env"]
    planfile.write_text(json.dumps(document))
    refused = _run("apply", str(planfile))
    assert refused.exit_code == 1 and "the plan file was edited after it was saved" in refused.output
    assert not host.exists("data")

    planfile.write_text(original.replace('"format_version": 1,', '"format_version": 1'))
    refused = _run("apply", str(planfile))
    assert refused.exit_code == 1 and "not a readable plan file" in refused.output

    # A plan signed under another controller's key is refused the same way.
    planfile.write_text(original)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(os.urandom(32))
    other_key.chmod(0o600)
    os.environ["PROVISION_PLAN_KEY_FILE"] = str(other_key)
    try:
        refused = _run("apply", str(planfile))
    finally:
        del os.environ["PROVISION_PLAN_KEY_FILE"]
    assert refused.exit_code == 1 and "the plan file was edited after it was saved" in refused.output
    assert not host.exists("data")
    assert _run("apply", str(planfile)).exit_code == 0
    assert host.read("data/app.conf") == "version=1\n"


def test_a_host_whose_facts_changed_refuses_the_apply(tmp_path: Path) -> None:
    """A stack manifest resolves against the host's facts: a driver update after the plan refuses it."""
    python = gpu_python(tmp_path / "gpu", "NVIDIA GeForce RTX 4090", "8.9", driver="570.124.04")
    manifest = tmp_path / "ada.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "ada", "target": {"root": str(tmp_path / "root"), "python": python},
        "gpu": {"arch": "sm_89"}, "nunchaku": {"enabled": False}, "comfyui": {}, "service": {"enabled": False},
        "resources": [{"kind": "directory", "path": "data"}]}))
    planfile = tmp_path / "ada.plan"
    assert _run("plan", str(manifest), "-o", str(planfile)).exit_code == 2
    assert json.loads(planfile.read_text())["facts"]["nvidia"]["driver"] == "570.124.04"

    gpu_python(tmp_path / "gpu", "NVIDIA GeForce RTX 4090", "8.9", driver="575.51.02")
    refused = _run("apply", str(planfile))
    assert refused.exit_code == 1
    assert "the host's facts changed since the plan was saved; nothing was changed" in refused.output
    assert "nvidia.driver: '570.124.04' -> '575.51.02'" in refused.output
    assert not (tmp_path / "root" / "data").exists()


def test_a_model_hashed_by_the_plan_and_trusted_by_the_apply_is_not_a_move(tmp_path: Path) -> None:
    """The plan's probe hashes a model the stat cache does not know; the apply's probe trusts the cache it
    filled. Same file, same state: the saved plan applies."""
    host = TargetHost("local", "local", str(tmp_path / "root"))
    model = os.urandom(64 * 1024)
    state = HubState()
    with serve_hub(state) as endpoint:
        sha = state.add("org/m", "m.safetensors", model)
        download = {"kind": "download", "path": "models/m.safetensors", "sha256": sha,
                    "url": f"{endpoint}/org/m/resolve/main/m.safetensors"}
        manifest = write_manifest(tmp_path, host, {"resources": [download]})
        assert _run("apply", str(manifest)).exit_code == 0
        Path(host.path(".provision/statcache.json")).unlink()
        document = yaml.safe_load(manifest.read_text())
        document["resources"].append({"kind": "directory", "path": "data"})
        manifest.write_text(yaml.safe_dump(document, sort_keys=False))
        planfile = tmp_path / "m.plan"
        assert _run("plan", str(manifest), "-o", str(planfile)).exit_code == 2
        applied = _run("apply", str(planfile))
        assert applied.exit_code == 0, applied.output
        assert host.exists("data")
