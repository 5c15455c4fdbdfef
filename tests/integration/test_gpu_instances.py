"""GPU selection: each ComfyUI service runs on its own GPU (CUDA_VISIBLE_DEVICES) and port, and the checks
run with the same device. The stack's service resources come from the real role expansion; the real agent
starts them (process manager) around the stand-in ComfyUI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from provisioner.checks.runner import run_instance_checks
from provisioner.commands.check import plans_for_host
from provisioner.engine import HostSession
from provisioner.manifest import load_manifest
from provisioner.transport import LocalTransport
from tests.support.fake_comfyui import make_fake_comfyui
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import converge, pending, plan
from tests.support.servers import free_port

STARTUP_SECONDS = 2.0  # this is about devices and ports, not ComfyUI's start-up time


def stack_manifest(tmp_path: Path, instances: list[dict[str, Any]]) -> Path:
    """An RTX 4090 stack (sm_89, resolved as declared on this GPU-less machine) whose ComfyUI runs with
    --cpu here, since there is no NVIDIA driver: the devices it is given are what is under test."""
    data: dict[str, Any] = {
        "name": "two-gpus",
        "target": {"connection": "local", "root": str(tmp_path / "root")},
        "gpu": {"arch": "sm_89"},
        "python": {"adopt": sys.prefix},
        "comfyui": {"repo": "https://github.com/comfyanonymous/ComfyUI", "ref": "v0.3.64"},
        "service": {"extra_args": ["--cpu"], "instances": instances, "ready_timeout": 60},
        "checks": {"nodes": ["KSampler"]},
        "roles": ["comfyui-nunchaku"],
    }
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def service_resources(stack: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The service resources and handlers the role expansion gives the stack (as plain manifest entries)."""
    session = HostSession(load_manifest(stack))
    session.plan()
    services = [{k: v for k, v in r.spec.items() if k != "unit"}
                for r in session.expansion.resources if r.kind == "service"]
    handler = session.expansion.handlers["restart-comfyui"].model_dump(mode="json", exclude_none=True)
    return services, handler


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_two_instances_get_two_ports_two_gpus_and_checks_on_the_same_devices(tmp_path: Path) -> None:
    make_fake_comfyui(tmp_path / "root" / "ComfyUI", startup_seconds=STARTUP_SECONDS)
    ports = [free_port(), free_port()]
    stack = stack_manifest(tmp_path, [{"gpu": 0, "port": ports[0]}, {"gpu": 1, "port": ports[1]}])
    services, handler = service_resources(stack)
    assert [s["name"] for s in services] == ["comfyui-gpu0", "comfyui-gpu1"]
    assert handler == {"restart": ["comfyui-gpu0", "comfyui-gpu1"], "env": {}}

    host = TargetHost("local", "local", str(tmp_path / "root"))
    body = {"resources": [{**s, "manager": "process"} for s in services],
            "handlers": {"restart-comfyui": handler}}
    services_manifest = write_manifest(tmp_path, host, body)
    pids: list[int] = []
    try:
        converge(services_manifest)
        records = [json.loads(host.read(f".provision/services/comfyui-gpu{n}.json")) for n in (0, 1)]
        pids = [r["pid"] for r in records]
        assert pids[0] != pids[1]
        assert [r["log"] for r in records] == [host.path("logs/comfyui-gpu0.log"), host.path("logs/comfyui-gpu1.log")]
        for n, record in enumerate(records):
            argv = record["argv"]
            assert argv[argv.index("--port") + 1] == str(ports[n])
            env = environ_of(record["pid"])
            assert (env["CUDA_VISIBLE_DEVICES"], env["CUDA_DEVICE_ORDER"]) == (str(n), "PCI_BUS_ID")
            assert "Starting server" in host.read(f"logs/comfyui-gpu{n}.log")

        # The checks: one plan per instance, on that instance's GPU (seen as torch device 0) and port.
        loaded = load_manifest(stack)
        plans = plans_for_host(loaded, LocalTransport(), ["smoke"])
        assert [p.instance for p in plans] == ["comfyui-gpu0", "comfyui-gpu1"]
        for n, check_plan in enumerate(plans):
            gpu = check_plan.request["gpu"]
            assert (gpu["index"], gpu["physical"]) == (0, n)
            assert gpu["env"] == {k: environ_of(pids[n])[k] for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
            assert check_plan.request["smoke"]["port"] == ports[n]
        results = run_instance_checks(LocalTransport(), plans, "python3", timeout=240)
        servers = [r for r in results if r.id == "smoke.server"]
        assert [(r.instance, r.status) for r in servers] == [("comfyui-gpu0", "pass"), ("comfyui-gpu1", "pass")]
        # The ComfyUI the smoke check started was given the same device as the service it stands for.
        assert [r.measured["cuda_visible_devices"] for r in servers] == ["0", "1"]

        # Moving the second instance to GPU 2 is a restart of that service alone.
        moved, _ = service_resources(stack_manifest(tmp_path, [{"gpu": 0, "port": ports[0]},
                                                               {"gpu": 2, "port": ports[1], "name": "comfyui-gpu1"}]))
        write_manifest(tmp_path, host, {**body, "resources": [{**s, "manager": "process"} for s in moved]})
        assert pending(plan(services_manifest)) == {"service:comfyui-gpu1": ["env"]}
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
