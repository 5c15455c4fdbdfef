"""The service resource under the process manager, and handlers that restart it."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.fake_comfyui import REAL_STARTUP_SECONDS, make_fake_comfyui
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, changed, converge, pending, plan
from tests.support.servers import free_port

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
    port = free_port()
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
        # Long enough that even a loaded machine's python starts, prints and exits within it.
        {"kind": "service", "name": "broken", "manager": "process", "argv": ["python3", "bad.py"],
         "settle_seconds": 3},
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


# --- readiness: "started" means the health probe answered ------------------------------------------------

def _comfy_service(tmp_path: Path, host: TargetHost, port: int, mode: str, **fields: object) -> Path:
    """The stand-in ComfyUI (realistic start-up: >= 15 s before /system_stats) as a probed service."""
    return write_manifest(tmp_path, host, {
        "resources": [
            {"kind": "envfile", "path": "comfyui.env", "values": {"COMFYUI_MODE": mode}, "notify": ["restart"]},
            {"kind": "service", "name": "comfyui", "manager": "process", "cwd": "ComfyUI", "env_file": "comfyui.env",
             "argv": [sys.executable, "main.py", "--listen", "0.0.0.0", "--port", str(port), "--cpu"],
             "ready": {"host": "0.0.0.0", "port": port, "path": "/system_stats", "expect_json": True}, **fields},
        ],
        "handlers": {"restart": {"restart": "comfyui"}},
    })


def _stats_now(port: int) -> dict[str, object]:
    """One request, no retries: a service reported as started must already answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/system_stats", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_service_is_started_once_its_probe_answers_and_restarts_wait_too(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    make_fake_comfyui(tmp_path / "root" / "ComfyUI")
    port = free_port()
    try:
        began = time.monotonic()
        report = apply(_comfy_service(tmp_path, host, port, "first"))
        assert report.ok, report.as_json()
        assert time.monotonic() - began >= REAL_STARTUP_SECONDS  # it waited for ComfyUI, not 2 s
        assert _stats_now(port)["system"]["comfyui_version"] == "0.3.64-standin"  # type: ignore[index]
        first_pid = _pid_of(host, "comfyui")

        # A handler restart is held to the same probe: when apply returns, the new process answers.
        restarted = apply(_comfy_service(tmp_path, host, port, "second"))
        assert restarted.ok and [h["name"] for h in restarted.handlers] == ["restart"], restarted.as_json()
        assert not restarted.handlers[0].get("error")
        assert _stats_now(port)["system"]["comfyui_version"] == "0.3.64-standin"  # type: ignore[index]
        assert _pid_of(host, "comfyui") != first_pid and _gone(first_pid)
    finally:
        if host.exists(".provision/services/comfyui.json"):
            os.killpg(_pid_of(host, "comfyui"), signal.SIGTERM)


def test_service_that_dies_before_answering_fails_with_its_exit_status_and_log(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    # Dies ~4 s in (after the old 2 s "settle"), as ComfyUI does when torch is missing.
    make_fake_comfyui(tmp_path / "root" / "ComfyUI", crash="ModuleNotFoundError(\"No module named 'torch'\")")
    report = apply(_comfy_service(tmp_path, host, free_port(), "x"))
    assert not report.ok
    error = next(r["error"] for r in report.resources if r["id"] == "service:comfyui")
    assert "comfyui exited with 1" in error and "before http://127.0.0.1:" in error
    assert "ModuleNotFoundError: No module named 'torch'" in error  # the log tail
    assert not host.exists(".provision/services/comfyui.json")
    assert pending(plan(_comfy_service(tmp_path, host, free_port(), "x")))["service:comfyui"] == ["state"]


def test_service_that_never_answers_times_out_is_stopped_and_not_recorded(tmp_path: Path) -> None:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    (tmp_path / "root" / "ComfyUI").mkdir(parents=True)
    # Alive but never listening: a hang while importing a custom node.
    (tmp_path / "root" / "ComfyUI" / "main.py").write_text(
        "import os, time\nopen('pid', 'w').write(str(os.getpid()))\nprint('importing custom nodes', flush=True)\n"
        "time.sleep(600)\n")
    # Long enough that a loaded machine's python starts and prints its line before the limit.
    report = apply(_comfy_service(tmp_path, host, free_port(), "x", ready_timeout=10))
    error = next(r["error"] for r in report.resources if r["id"] == "service:comfyui")
    assert "comfyui did not become ready within 10 s" in error and "it was stopped" in error
    assert "importing custom nodes" in error
    assert _gone(int((tmp_path / "root" / "ComfyUI" / "pid").read_text()))
    assert not host.exists(".provision/services/comfyui.json")


def _pid_of(host: TargetHost, name: str) -> int:
    return int(json.loads(host.read(f".provision/services/{name}.json"))["pid"])
