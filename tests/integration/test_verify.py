"""`provision verify` against hosts that `provision apply` converged, over local, ssh and docker: every
generated test passes, then each change made behind provision's back fails exactly its own tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gitrepos import UpstreamRepo
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import converge
from tests.support.servers import free_port, serve_directory

SERVER = """\
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "3"); self.end_headers(); self.wfile.write(b"ok\\n")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
# Manifest values that would be code if they were pasted into the generated module.
HOSTILE_VALUE = "x'''\"\"\"); __import__('os').system('touch PWNED') #"
HOSTILE_CONTENT = '"""\n__import__("os").system("touch PWNED")\n\'\'\'\n'
MODEL = b"\x00model-bytes\x01" * 1000


def provision(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd)


def junit_outcomes(path: Path) -> dict[str, str]:
    """JUnit test name (the resource id and aspect, without testinfra's host prefix) -> outcome."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name") or ""
        # testinfra puts the host first (`local`, `ssh://127.0.0.1`, `docker://NAME`, which may have dashes).
        found = re.match(r"^(\w+)\[.*?-((?:directory|file|envfile|venv|pip|git|download|command|service):.*)\]$", name)
        assert found, name
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[f"{found.group(1)} {found.group(2)}"] = "failed" if failed else "passed"
    return outcomes


@pytest.fixture
def models(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(MODEL)
    with serve_directory(folder) as base:
        yield base


def _manifest(tmp_path: Path, host: TargetHost, upstream: UpstreamRepo, index: str, models: str,
              port: int) -> Path:
    return write_manifest(tmp_path, host, {"resources": [
        {"kind": "directory", "path": "app", "mode": "0750"},
        {"kind": "file", "path": "app/server.py", "content": SERVER, "mode": "0640"},
        {"kind": "file", "path": "app/hostile.txt", "content": HOSTILE_CONTENT},
        {"kind": "envfile", "path": "app.env", "values": {"GREETING": HOSTILE_VALUE, "PORT": str(port)}},
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": index},
        {"kind": "git", "path": "src/app", "repo": upstream.url, "ref": "v1.0.0"},
        {"kind": "download", "path": "models/model.safetensors", "url": f"{models}/model.safetensors",
         "size": len(MODEL)},
        {"kind": "service", "name": "app", "manager": "process", "argv": ["python3", "app/server.py", str(port)],
         "env_file": "app.env", "ready": {"port": port}},
    ]})


def _stop_service(host: TargetHost) -> None:
    record = host.run(["cat", host.path(".provision/services/app.json")], check=False)
    if record.returncode == 0:
        host.run(["kill", str(json.loads(record.stdout)["pid"])], check=False)
        host.run(["sh", "-c", 'while kill -0 "$1" 2>/dev/null; do sleep 0.05; done', "sh",
                  str(json.loads(record.stdout)["pid"])], check=False)


def test_verify_passes_on_a_converged_host_and_names_each_tampered_resource(
    host: TargetHost, tmp_path: Path, upstream: UpstreamRepo, package_index: str, models: str
) -> None:
    manifest = _manifest(tmp_path, host, upstream, package_index, models, free_port())
    try:
        converge(manifest)
        junit, kept = tmp_path / "verify.xml", tmp_path / "kept"
        done = provision("verify", str(manifest), "--junit", str(junit), "--keep", str(kept), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        all_passed = junit_outcomes(junit)
        assert set(all_passed.values()) == {"passed"}
        assert set(all_passed) == {
            "test_directory directory:app", "test_mode directory:app mode",
            "test_file file:app/server.py content", "test_mode file:app/server.py mode",
            "test_file file:app/hostile.txt content",
            "test_envfile envfile:app.env values", "test_mode envfile:app.env mode",
            "test_venv venv:venv", "test_package pip:venv provdemo==1.0.0",
            "test_git_commit git:src/app at v1.0.0",
            "test_model_file download:models/model.safetensors present",
            "test_service service:app running", f"test_port service:app listening on {_port(manifest)}",
        }
        # The hostile values stayed data: the module is the shipped one, and nothing ran them.
        shipped = (Path(__file__).parents[2] / "provisioner/verify/host_tests.py").read_text()
        assert (kept / "test_provisioned_host.py").read_text() == shipped
        data = json.loads((kept / "verify_data.json").read_text())
        envfile = next(case for case in data["cases"] if case["check"] == "envfile")
        assert envfile["data"]["values"]["GREETING"] == HOSTILE_VALUE
        assert not host.exists("PWNED") and not (tmp_path / "PWNED").exists() and not (kept / "PWNED").exists()

        # Behind provision's back: a mode, a package, a checkout and the service.
        host.run(["chmod", "0600", host.path("app/server.py")])
        host.run([host.path("venv/bin/python"), "-m", "pip", "uninstall", "-q", "-y", "provdemo"])
        host.run(["git", "-C", host.path("src/app"), "checkout", "-q", "v1.1.0"])
        _stop_service(host)
        done = provision("verify", str(manifest), "--junit", str(junit), cwd=tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        failed = {name for name, outcome in junit_outcomes(junit).items() if outcome == "failed"}
        assert failed == {
            "test_mode file:app/server.py mode", "test_package pip:venv provdemo==1.0.0",
            "test_git_commit git:src/app at v1.0.0", "test_service service:app running",
            f"test_port service:app listening on {_port(manifest)}",
        }, done.stdout
        assert "has mode 0600; the manifest says 0640" in done.stdout

        # The kept tests rerun with plain pytest and see the same host.
        rerun = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=kept, capture_output=True, text=True,
                               timeout=300, check=False, env={k: v for k, v in os.environ.items()
                                                              if k != "PYTEST_ADDOPTS"})
        assert rerun.returncode == 1 and "5 failed, 8 passed" in rerun.stdout, rerun.stdout + rerun.stderr
    finally:
        _stop_service(host)


def _port(manifest: Path) -> int:
    import yaml

    document = yaml.safe_load(manifest.read_text())
    return int(document["resources"][-1]["ready"]["port"])
