"""The service resource under the process manager, and handlers that restart it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, changed, converge, pending, plan

SERVER = """\
import http.server, os, sys
port = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (os.environ.get("GREETING", "none") + "\\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
print("serving", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _get(host: TargetHost, port: int) -> str:
    url = f"http://127.0.0.1:{port}/"
    script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    for _ in range(50):
        done = host.run(["python3", "-c", script], check=False)
        if done.returncode == 0:
            return done.stdout.strip()
        time.sleep(0.1)
    raise AssertionError(f"nothing answers on port {port}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _manifest(tmp_path: Path, host: TargetHost, port: int, greeting: str) -> Path:
    return write_manifest(tmp_path, host, {
        "resources": [
            {"kind": "file", "path": "app/server.py", "content": SERVER, "notify": ["restart-app"]},
            {"kind": "envfile", "path": "app.env", "values": {"GREETING": greeting}, "notify": ["restart-app"]},
            {"kind": "service", "name": "app", "manager": "process", "argv": ["python3", "app/server.py", str(port)],
             "env_file": "app.env", "settle_seconds": 0.5},
        ],
        "handlers": {"restart-app": {"restart": "app"}},
    })


def _pid(host: TargetHost) -> int:
    return int(json.loads(host.read(".provision/services/app.json"))["pid"])


def test_service_starts_restarts_on_notify_and_is_restored(host: TargetHost, tmp_path: Path) -> None:
    port = _free_port()
    manifest = _manifest(tmp_path, host, port, "hello")
    try:
        converge(manifest)
        assert _get(host, port) == "hello"
        first_pid = _pid(host)
        assert "serving" in host.read("logs/app.log")

        # The env file changes: the handler restarts the service once, and it reads the new value.
        manifest = _manifest(tmp_path, host, port, "bonjour")
        report = apply(manifest)
        assert changed(report) == ["envfile:app.env"]
        assert [h["name"] for h in report.handlers] == ["restart-app"]
        assert _get(host, port) == "bonjour"
        assert _pid(host) != first_pid

        # A killed service is drift, and apply starts it again.
        host.run(["kill", str(_pid(host))])
        for _ in range(50):
            if host.run(["kill", "-0", str(_pid(host))], check=False).returncode != 0:
                break
            time.sleep(0.1)
        assert pending(plan(manifest)) == {"service:app": ["state"]}
        converge(manifest)
        assert _get(host, port) == "bonjour"
    finally:
        if host.exists(".provision/services/app.json"):
            host.run(["kill", str(_pid(host))], check=False)


def test_service_that_dies_at_start_fails_with_its_log(host: TargetHost, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "file", "path": "bad.py", "content": "import sys\nprint('bad config')\nsys.exit(4)\n"},
        {"kind": "service", "name": "broken", "manager": "process", "argv": ["python3", "bad.py"],
         "settle_seconds": 0.5},
    ]})
    report = apply(manifest)
    assert not report.ok
    error = report.resources[1]["error"]
    assert "exited with 4" in error and "bad config" in error


def test_systemd_unit_is_rendered_from_the_template(tmp_path: Path) -> None:
    from provisioner.expand import expand
    from provisioner.manifest import load_manifest
    from tests.support.hosts import TargetHost as Host

    host = Host("local", "local", "/opt/comfy")
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "service", "name": "comfyui", "argv": ["venv/bin/python", "main.py", "--port", "8188"],
         "cwd": "ComfyUI", "env_file": "comfyui.env"}]})
    unit = expand(load_manifest(manifest), environ={}).resources[0].spec["unit"]
    assert "ExecStart=@PROVISION_ROOT@/venv/bin/python main.py --port 8188\n" in unit
    assert "EnvironmentFile=@PROVISION_ROOT@/comfyui.env\n" in unit
    assert "WorkingDirectory=@PROVISION_ROOT@/ComfyUI\n" in unit
