"""`provision init --facts`: the starter manifest it writes resolves for that host (`provision resolve`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner.catalog import load_catalog
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.resolve import resolve
from provisioner.starter import starter_manifest
from provisioner.target_options import TargetOverride

FACTS = Path(__file__).parent / "facts"
PROVISION = [sys.executable, "-m", "provisioner"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROVISION, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize(("host", "arch", "files"), [
    ("rtx4090", "sm_89", 4), ("rtx3090", "sm_86", 4), ("t4", "sm_75", 4), ("a100", "sm_80", 4),
    ("rtx5090", "sm_120", 4), ("b200", "sm_100", 1), ("h100", "sm_90", 1)])
def test_starter_manifest_resolves_for_the_host_it_was_written_for(tmp_path: Path, host: str, arch: str,
                                                                  files: int) -> None:
    """In process, through the same calls as the commands: init's writer, then resolve's load + resolve."""
    facts = load_facts(FACTS / f"{host}.json")
    target = TargetOverride("ssh://root@gpu-host", None, "/srv/comfy").target()
    out = tmp_path / "elsewhere" / "provision.yaml"  # far from manifests/: the base is the packaged one
    out.parent.mkdir()
    out.write_text(starter_manifest(facts, target, load_catalog()).text())
    data = yaml.safe_load(out.read_text())
    assert data["extends"] == "builtin:comfyui-nunchaku"
    assert data["gpu"]["arch"] == arch
    assert data["target"] == {"connection": "ssh://root@gpu-host", "root": "/srv/comfy"}
    assert data["models"]  # these hosts have room for a catalog model and its set
    resolution = resolve(load_manifest(out).manifest, facts, load_catalog())
    assert resolution.violations == []
    # The model and its workflow set; on Hopper/Blackwell B200 the self-contained FP8 checkpoint.
    assert len(resolution.models) == files


def test_cli_writes_a_manifest_that_provision_resolve_accepts(tmp_path: Path) -> None:
    facts = FACTS / "rtx4090.json"
    out = tmp_path / "elsewhere" / "provision.yaml"
    written = cli("init", "ssh://root@gpu-host", "--facts", str(facts), "--root", "/srv/comfy", "-o", str(out))
    assert written.returncode == 0, written.stderr
    assert "RTX 4090" in written.stdout and f"Wrote {out}" in written.stdout
    resolved = cli("resolve", str(out), "--facts", str(facts), "--json")
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert json.loads(resolved.stdout)["violations"] == []


def test_a_small_disk_gets_no_model_and_is_told_why(tmp_path: Path) -> None:
    facts = json.loads((FACTS / "rtx4090.json").read_text())
    facts["disk_free_bytes"] = 16 * 1024**3  # room for the packages (~12 GB), not for a model set too
    path = tmp_path / "small.json"
    path.write_text(json.dumps(facts))
    out = tmp_path / "provision.yaml"
    written = cli("init", "--facts", str(path), "-o", str(out))
    assert written.returncode == 0, written.stderr
    assert "models" not in yaml.safe_load(out.read_text())
    assert "No catalog model fits this host" in written.stdout and "disk" in written.stdout.lower()
    assert resolve(load_manifest(out).manifest, load_facts(path), load_catalog()).violations == []

    # Not even the packages fit: nothing is written, and the error says what to free.
    facts["disk_free_bytes"] = 2 * 1024**3
    path.write_text(json.dumps(facts))
    out.unlink()
    refused = cli("init", "--facts", str(path), "-o", str(out))
    assert refused.returncode == 1 and "Free disk space" in refused.stderr and not out.exists()


def test_a_host_without_a_gpu_gets_a_cpu_manifest_and_is_told_so(tmp_path: Path) -> None:
    out = tmp_path / "provision.yaml"
    written = cli("init", "--facts", str(FACTS / "nogpu.json"), "-o", str(out))
    assert written.returncode == 0, written.stderr
    assert yaml.safe_load(out.read_text())["gpu"] == {"arch": "auto", "allow_cpu": True}
    assert "no NVIDIA GPU" in written.stdout and "gpu.allow_cpu: true" in written.stdout
    resolution = resolve(load_manifest(out).manifest, load_facts(FACTS / "nogpu.json"), load_catalog())
    assert resolution.violations == [] and resolution.mode == "cpu"


def test_an_existing_file_is_kept_without_force(tmp_path: Path) -> None:
    out = tmp_path / "provision.yaml"
    out.write_text("name: mine\n")
    refused = cli("init", "--facts", str(FACTS / "rtx4090.json"), "-o", str(out))
    assert refused.returncode == 1 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert out.read_text() == "name: mine\n"
    forced = cli("init", "--facts", str(FACTS / "rtx4090.json"), "-o", str(out), "--force")
    assert forced.returncode == 0 and "sm_89" in out.read_text()


def test_default_output_and_a_named_model(tmp_path: Path) -> None:
    written = cli("init", "--facts", str(FACTS / "rtx3090.json"), "--model", "flux.1-schnell", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    data = yaml.safe_load((tmp_path / "provision.yaml").read_text())
    assert data["models"][0]["repo"] == "nunchaku-tech/nunchaku-flux.1-schnell"
    unknown = cli("init", "--facts", str(FACTS / "rtx3090.json"), "--model", "nope", "-o", str(tmp_path / "x.yaml"))
    assert unknown.returncode == 1 and "not in the catalog" in unknown.stderr


def test_unknown_builtin_base_names_the_ones_there_are(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("extends: builtin:nope\nname: m\n")
    done = cli("validate", str(path))
    assert done.returncode == 1 and "builtin:comfyui-nunchaku" in done.stderr and "Traceback" not in done.stderr
