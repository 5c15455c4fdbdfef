"""`provision verify`'s refusals: unknown host keys, unreachable hosts, targets it cannot test, and manifest
values that stay data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner.expand import HostResource
from provisioner.manifest.model import Target
from provisioner.verify.cases import cases_for
from provisioner.verify.run import run_suite
from provisioner.verify.suite import SshLogin, host_spec, write_suite
from tests.support.servers import free_port
from tests.support.sshd import shared_sshd

HOSTILE = "'''\"\"\"); __import__('os').system('touch PWNED') #\n"


def provision(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def _manifest(tmp_path: Path, target: dict[str, object]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "v", "target": target,
                                    "resources": [{"kind": "directory", "path": "app"}]}))
    return path


@pytest.mark.ssh
def test_the_ssh_tests_refuse_a_host_key_that_known_hosts_lacks(request: pytest.FixtureRequest,
                                                                   tmp_path: Path) -> None:
    server = shared_sshd(request)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    login = SshLogin(empty, server.client_key, 10)
    target = Target(connection=server.connection(), root=str(tmp_path))
    folder = tmp_path / "suite"
    resource = HostResource("directory:.", "directory", "manifest", {"path": "."}, "", [])
    module = write_suite(folder, host_spec(target, folder, login), str(tmp_path), "v",
                         cases_for([resource], str(tmp_path), "python3"), login)
    config = (folder / "ssh_config").read_text()
    assert "StrictHostKeyChecking yes" in config and f'UserKnownHostsFile "{empty.resolve()}"' in config
    result = run_suite(folder, module, tmp_path / "junit.xml")
    assert result.exit_code() == 1, result.output
    assert [t.outcome for t in result.tests] == ["error"]
    assert "Host key verification failed" in result.tests[0].message + result.output
    assert empty.read_text() == "", "a first-seen key is never recorded by the tests"


@pytest.mark.ssh
def test_verify_refuses_an_unknown_host_and_an_unreachable_one(request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    server = shared_sshd(request)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = {"connection": server.connection(), "root": str(tmp_path / "root"),
              "identity_file": str(server.client_key)}
    done = provision("verify", str(_manifest(tmp_path, target)), "--known-hosts", str(empty))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "known_hosts" in done.stderr or "host key" in done.stderr.lower(), done.stderr

    closed = {**target, "connection": f"ssh://root@127.0.0.1:{free_port()}", "connect_timeout": 2}
    done = provision("verify", str(_manifest(tmp_path, closed)))
    assert done.returncode == 1 and "connection refused" in done.stderr and "Traceback" not in done.stderr


def test_verify_refuses_image_builds_and_a_folder_of_someone_elses_files(tmp_path: Path) -> None:
    done = provision("verify", str(_manifest(tmp_path, {"connection": "docker-image://base:1",
                                                        "commit_tag": "x:1"})))
    assert done.returncode == 1 and "docker-image:// target is a build" in done.stderr, done.stderr

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine\n")
    done = provision("verify", str(_manifest(tmp_path, {"connection": "local", "root": str(tmp_path / "r")})),
                     "--keep", str(theirs))
    assert done.returncode == 1 and "files that verify did not write" in done.stderr, done.stderr
    assert (theirs / "notes.txt").read_text() == "mine\n"


def test_hostile_manifest_values_stay_data(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    root = tmp_path / "root"
    path.write_text(yaml.safe_dump({"name": "v", "target": {"connection": "local", "root": str(root)}, "resources": [
        {"kind": "file", "path": "a.txt", "content": HOSTILE},
        {"kind": "envfile", "path": "a.env", "values": {"V": HOSTILE.strip()}},
    ]}))
    assert provision("apply", str(path)).returncode == 0
    kept = tmp_path / "kept"
    done = provision("verify", str(path), "--keep", str(kept))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    module = (kept / "test_provisioned_host.py").read_text()
    assert "PWNED" not in module and "PWNED" not in (kept / "conftest.py").read_text()
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()

    # The hostile value is compared as data: changed on the host, its test fails and nothing runs.
    (root / "a.env").write_text("V=other\n")
    done = provision("verify", str(path))
    assert done.returncode == 2 and "V differ from the manifest's values" in done.stdout, done.stdout
    report = json.loads(provision("verify", str(path), "--json").stdout)
    assert report["format_version"] == 1 and report["exit_code"] == 2
    assert report["summary"] == {"passed": 2, "failed": 1, "error": 0, "skipped": 0}
    assert [t["name"] for t in report["tests"] if t["outcome"] == "failed"] == [
        "test_envfile[local-envfile:a.env values]"]
