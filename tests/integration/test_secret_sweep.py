"""Secrets never leak: every command, succeeding and failing, run through the real CLI with canary secrets
(an HF token and an env-file secret), then every output, the ledger, every state file on the host, the fleet
logs and the argv of every process seen during the runs are searched for the canaries."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.servers import serve_handler

HF_TOKEN = "hf_CANARYtok3nZq81xV"
ENV_SECRET = "envCANARYs3cretW4p"
OPTIONAL_SECRET = "optCANARYvalueR7m"  # only some runs have it: the others must leave its key alone
CANARIES = (HF_TOKEN, ENV_SECRET, OPTIONAL_SECRET)
MODEL = b"model bytes\n" * 100

SHOW_ENV = "import os\nfor key, value in sorted(os.environ.items()):\n    print(key + '=' + value)\n"


def _hub_handler() -> type[http.server.BaseHTTPRequestHandler]:
    class Hub(http.server.BaseHTTPRequestHandler):
        """Serves /ok/model.bin to the right bearer token; /deny/ answers 401 and echoes the token it got in
        its reason phrase and body, as careless servers do."""

        def log_message(self, *_args: object) -> None:
            pass

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization") or ""
            if self.path.startswith("/ok/") and auth == f"Bearer {HF_TOKEN}":
                self.send_response(200)
                self.send_header("Content-Length", str(len(MODEL)))
                self.end_headers()
                self.wfile.write(MODEL)
                return
            body = f"invalid credentials: {auth}\n".encode()
            self.send_response(401, f"Unauthorized ({auth})")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Hub


@pytest.fixture(scope="module")
def hub() -> Iterator[str]:
    with serve_handler(_hub_handler()) as url:
        yield url


class ArgvWatch:
    """Samples /proc/*/cmdline of every process while the runs go on (a thread, bounded by `stop`)."""

    def __init__(self) -> None:
        self.samples = 0
        self.processes: set[tuple[str, bytes]] = set()
        self.hits: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        needles = [c.encode() for c in CANARIES]
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                self.processes.add((pid, cmdline[:200]))
                if any(n in cmdline for n in needles):
                    self.hits.append(cmdline.decode("utf-8", "replace"))
            self.samples += 1
            self._stop.wait(0.01)


@dataclass
class Sweep:
    tmp: Path
    root: Path
    ledger: Path
    hub: str
    runs: list[tuple[str, int, str]] = field(default_factory=list)

    def manifest(self, name: str, *, model: str = "ok", handler_fails: bool = False, mode: str = "prod",
                 with_secret: bool = True, root: Path | None = None) -> Path:
        secrets: dict[str, Any] = {"OPTIONAL_KEY": {"from_env": "SWEEP_OPTIONAL", "optional": True}}
        if with_secret:
            secrets["API_KEY"] = {"from_env": "SWEEP_SECRET"}
        script = SHOW_ENV + ("raise SystemExit(3)\n" if handler_fails else "")
        document = {
            "name": "sweep", "target": {"connection": "local", "root": str(root or self.root)},
            "gpu": {"allow_cpu": True},
            "resources": [
                {"kind": "file", "path": "app/show_env.py", "content": script},
                {"kind": "envfile", "path": "app.env", "values": {"MODE": mode}, "secrets": secrets,
                 "notify": ["show-env"]},
                {"kind": "download", "path": f"models/{model}.bin", "url": f"{self.hub}/{model}/model.bin",
                 "sha256": hashlib.sha256(MODEL).hexdigest(), "auth": {"from_env": "HF_TOKEN"}},
            ],
            "handlers": {"show-env": {"argv": ["python3", "app/show_env.py"]}},
        }
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def run(self, *args: str, optional: bool = True, expect: tuple[int, ...] = (0, 1, 2)) -> str:
        env = {**os.environ, "HF_TOKEN": HF_TOKEN, "SWEEP_SECRET": ENV_SECRET, "PROVISION_LEDGER": str(self.ledger)}
        if optional:
            env["SWEEP_OPTIONAL"] = OPTIONAL_SECRET
        else:
            env.pop("SWEEP_OPTIONAL", None)
        done = subprocess.run([sys.executable, "-m", "provisioner", *args], env=env, capture_output=True,
                              text=True, timeout=120)
        output = done.stdout + done.stderr
        assert done.returncode in expect, (args, done.returncode, output)
        assert "Traceback" not in output, (args, output)
        self.runs.append((" ".join(args), done.returncode, output))
        return output


def _files_under(directory: Path) -> Iterator[Path]:
    if directory.is_dir():
        yield from (p for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def test_secrets_never_leak_from_any_command(tmp_path: Path, hub: str) -> None:
    sweep = Sweep(tmp_path, tmp_path / "root", tmp_path / "state" / "ledger.sqlite", hub)
    good = sweep.manifest("good")
    changed = sweep.manifest("changed", mode="staging")
    bad_download = sweep.manifest("bad-download", model="deny")
    # Each failing handler run changes the env file again, so the handler is notified again.
    bad_handler = [sweep.manifest(f"bad-handler{n}", handler_fails=True, mode=f"broken{n}") for n in range(3)]
    removed = sweep.manifest("removed", with_secret=False)
    fleet_root = tmp_path / "fleet-root"
    fleet_manifest = sweep.manifest("fleet-good", root=fleet_root)
    fleet_bad = [sweep.manifest(f"fleet-bad{n}", root=fleet_root, handler_fails=True, mode=f"broken{n}")
                 for n in range(2)]
    inventories = {}
    for name, manifest in (("fleet", fleet_manifest), ("fleet-bad0", fleet_bad[0]), ("fleet-bad1", fleet_bad[1])):
        inventories[name] = tmp_path / f"{name}.inventory.yaml"
        inventories[name].write_text(yaml.safe_dump({
            "defaults": {"manifest": str(manifest)},
            "hosts": {"box-01": {"connection": "local", "root": str(fleet_root)}}}))

    with ArgvWatch() as watch:
        sweep.run("validate", str(good), expect=(0,))
        sweep.run("validate", str(good), optional=False, expect=(0,))
        sweep.run("plan", str(good), expect=(2,))
        sweep.run("plan", "--json", str(good), expect=(2,))
        sweep.run("apply", "--dry-run", str(good), expect=(2,))
        sweep.run("apply", "-v", str(good), expect=(0,))
        sweep.run("plan", str(good), expect=(0,))
        sweep.run("plan", "--changes-only", str(good), expect=(0,))
        sweep.run("apply", "--json", str(good), expect=(0,))
        sweep.run("apply", "-v", "--json", str(changed), expect=(0,))
        sweep.run("apply", str(good), expect=(0,))
        sweep.run("generations", str(good), expect=(0,))
        sweep.run("generations", "--json", str(good), expect=(0,))
        sweep.run("rollback", str(good), expect=(0,))
        sweep.run("rollback", "--json", "--to", "1", str(good), expect=(0,))
        sweep.run("plan", str(bad_download), expect=(2,))
        sweep.run("apply", str(bad_download), expect=(1,))
        sweep.run("apply", "-v", str(bad_download), expect=(1,))
        sweep.run("apply", "--json", str(bad_download), expect=(1,))
        sweep.run("apply", str(bad_handler[0]), expect=(1,))
        sweep.run("apply", "-v", str(bad_handler[1]), expect=(1,))
        sweep.run("apply", "--json", "-v", str(bad_handler[2]), expect=(1,))
        sweep.run("rollback", str(good), expect=(0, 1))
        sweep.run("apply", str(good), expect=(0,))
        # Without the optional secret on this controller: its key on the host is left alone, and not shown.
        unset_plan = sweep.run("plan", str(good), optional=False, expect=(0,))
        sweep.run("plan", "--json", str(good), optional=False, expect=(0,))
        sweep.run("apply", "-v", str(good), optional=False, expect=(0,))
        removal_plan = sweep.run("plan", str(removed), expect=(2,))
        sweep.run("apply", str(removed), expect=(0,))
        sweep.run("apply", "--json", str(removed), expect=(0,))
        sweep.run("check", str(good), expect=(0, 1, 2))
        sweep.run("check", "--json", str(good), expect=(0, 1, 2))
        sweep.run("lock", str(good), expect=(0, 1))
        sweep.run("history", expect=(0,))
        sweep.run("history", "--json", expect=(0,))
        sweep.run("facts", str(good), expect=(0,))
        sweep.run("fleet", "plan", str(inventories["fleet"]), expect=(2,))
        sweep.run("fleet", "plan", "--json", str(inventories["fleet"]), expect=(2,))
        sweep.run("fleet", "apply", "-v", str(inventories["fleet"]), expect=(0,))
        sweep.run("fleet", "apply", "--json", str(inventories["fleet-bad0"]), expect=(1,))
        sweep.run("fleet", "apply", "-v", str(inventories["fleet-bad1"]), expect=(1,))
        time.sleep(0.05)

    leaks = [f"output of `{args}`" for args, _, output in sweep.runs if any(c in output for c in CANARIES)]
    searched = [sweep.ledger, *_files_under(sweep.ledger.parent)]  # the ledger and the fleet logs beside it
    for root in (sweep.root, fleet_root):
        searched += [p for p in _files_under(root) if p.name != "app.env"]  # app.env is where secrets belong
    assert any(p.parent.name == "generations" for p in searched)
    assert any(p.suffix == ".log" for p in _files_under(sweep.ledger.parent / "logs"))
    for path in searched:
        data = path.read_bytes()
        leaks += [f"{path} holds {c[:6]}…" for c in CANARIES if c.encode() in data]
    leaks += [f"argv: {cmdline}" for cmdline in watch.hits]
    print(f"{len(sweep.runs)} runs, {len(searched)} files, {watch.samples} /proc samples of "
          f"{len(watch.processes)} processes: {len(leaks)} leaks")
    assert watch.samples > 50 and len(sweep.runs) >= 36
    # The runs did what they are for (a sweep of runs that all failed early would prove nothing).
    assert "OPTIONAL_KEY" not in unset_plan and (sweep.root / "app.env").exists()
    assert "env.API_KEY: (secret) → removed" in removal_plan, removal_plan
    env_now = (sweep.root / "app.env").read_text()
    assert "API_KEY" not in env_now and f"OPTIONAL_KEY={OPTIONAL_SECRET}" in env_now
    assert any("show-env" in output and "failed" in output for _, code, output in sweep.runs if code == 1)

    assert leaks == []
