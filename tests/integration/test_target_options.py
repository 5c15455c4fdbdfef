"""--target, -i and --root on plan/apply/check, and `provision init`, run as the CLI against a real sshd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.sshd import SshServer, shared_sshd

PROVISION = [sys.executable, "-m", "provisioner"]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> SshServer:
    return shared_sshd(request)


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROVISION, *args], capture_output=True, text=True, timeout=timeout)


def layout_manifest(tmp_path: Path) -> Path:
    """A manifest aimed at somewhere else entirely: a local root no command here may touch."""
    path = tmp_path / "motd.yaml"
    path.write_text(yaml.safe_dump({
        "name": "motd",
        "target": {"connection": "local", "root": str(tmp_path / "manifest-root")},
        "resources": [{"kind": "file", "path": "motd", "content": "hi\n"}],
    }))
    return path


@pytest.mark.ssh
def test_plan_apply_check_take_the_host_key_and_root_from_the_command_line(server: SshServer, tmp_path: Path) -> None:
    manifest = layout_manifest(tmp_path)
    root = tmp_path / "ssh-root"
    over = ["--target", server.connection(), "-i", str(server.client_key), "--root", str(root),
            "--known-hosts", str(server.known_hosts)]
    logins = server.accepted_logins()
    drift = cli("plan", str(manifest), *over)
    assert drift.returncode == 2, drift.stderr
    assert server.accepted_logins() > logins  # it went over SSH, not to the manifest's local target
    applied = cli("apply", str(manifest), *over)
    assert applied.returncode == 0, applied.stderr
    assert (root / "motd").read_text() == "hi\n"
    assert not (tmp_path / "manifest-root").exists()
    assert cli("plan", str(manifest), *over).returncode == 0
    checked = cli("check", str(manifest), *over, "--only", "gpu", "--json")
    assert checked.returncode == 0, checked.stderr
    assert f"127.0.0.1:{server.port}" in checked.stdout  # the report names the host it checked

    # Strict host keys stay on: an unknown key is refused as for a manifest's target.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    refused = cli("plan", str(manifest), *over[:-1], str(empty))
    assert refused.returncode == 1 and "--trust-new-hosts" in refused.stderr


def test_bad_values_are_refused_as_the_manifest_field_would_be(tmp_path: Path) -> None:
    manifest = layout_manifest(tmp_path)
    for args, words in [
        (["--target", "ssh://root@host;touch /tmp/pwned"], "--target: "),
        (["--target", "ftp://host"], "is not a connection"),
        (["--root", "/"], "--root: target.root must not be '/'"),
        (["-i", str(tmp_path / "no-such-key")], "is not a file"),
    ]:
        for command in ("plan", "apply", "check"):
            done = cli(command, str(manifest), *args)
            assert done.returncode == 1, (command, args, done.stdout, done.stderr)
            assert words in done.stderr and "Traceback" not in done.stderr, (command, done.stderr)
    assert not (tmp_path / "manifest-root").exists()


def test_local_target_and_root_override_a_remote_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "remote.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "remote", "target": {"connection": "ssh://nobody@unreachable.invalid:2222", "root": "/srv/x"},
        "resources": [{"kind": "file", "path": "motd", "content": "hi\n"}]}))
    root = tmp_path / "here"
    assert cli("apply", str(manifest), "--target", "local", "--root", str(root)).returncode == 0
    assert (root / "motd").read_text() == "hi\n"


@pytest.mark.ssh
def test_init_over_ssh_writes_a_manifest_that_resolves_there(server: SshServer, tmp_path: Path) -> None:
    out = tmp_path / "somewhere" / "provision.yaml"
    root = tmp_path / "init-root"
    args = ["init", server.connection(), "-i", str(server.client_key), "--root", str(root), "-o", str(out),
            "--known-hosts", str(server.known_hosts)]
    logins = server.accepted_logins()
    written = cli(*args)
    assert written.returncode == 0, written.stderr
    assert server.accepted_logins() == logins + 1  # the facts in one round trip, on one connection
    data = yaml.safe_load(out.read_text())
    assert data["target"] == {"connection": server.connection(), "root": str(root),
                              "identity_file": str(server.client_key)}
    # This machine has no NVIDIA GPU: a CPU manifest, said so, and it resolves against the live host.
    assert data["gpu"] == {"arch": "auto", "allow_cpu": True}
    assert "gpu.allow_cpu: true" in written.stdout
    resolved = cli("resolve", str(out))  # live facts over SSH (the pinned key through PROVISION_KNOWN_HOSTS)
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert "cpu" in resolved.stdout.lower()

    again = cli(*args)
    assert again.returncode == 1 and "--force" in again.stderr
    assert cli(*args, "--force").returncode == 0


@pytest.mark.ssh
def test_a_host_without_a_gpu_is_told_the_same_fix_by_plan_and_check(server: SshServer, tmp_path: Path) -> None:
    manifest = tmp_path / "gpu.yaml"
    manifest.write_text(yaml.safe_dump({
        "extends": "builtin:comfyui-nunchaku", "name": "gpu-wanted",
        "target": {"connection": server.connection(), "identity_file": str(server.client_key),
                   "root": str(tmp_path / "root")}}))
    for command in ("plan", "check"):
        done = cli(command, str(manifest), "--known-hosts", str(server.known_hosts))
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "no NVIDIA GPU found on the host" in done.stderr and "gpu.allow_cpu: true" in done.stderr, command
        assert "Traceback" not in done.stderr
