"""Rendering without a host: the fleet table never cuts a value, plain progress is rate-limited, fleet counts."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from provisioner.engine import PlanReport
from provisioner.fleet.report import render_plan_table
from provisioner.fleet.results import FleetPlanResult, HostPlan
from provisioner.render.fleet_progress import FleetProgress
from provisioner.render.progress import ApplyProgress

DRIVER = "580.126.09"


def _fleet() -> FleetPlanResult:
    report = PlanReport("render-node-with-a-long-name-07", "/srv", "m", [], 0.1)
    hosts = [HostPlan("render-node-with-a-long-name-07", "ok", report=report,
                      gpu={"text": f"NVIDIA GeForce RTX 4090 · {DRIVER}", "problems": []}),
             HostPlan("h2", "unreachable", error="connection refused")]
    return FleetPlanResult("run", "fleet.yaml", hosts, 0.5)


@pytest.mark.parametrize("columns", ["60", "30", "200"])
def test_the_fleet_table_keeps_the_full_driver_version_at_any_width(columns: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    table = render_plan_table(_fleet())
    words = table.split()
    assert DRIVER in words, table
    assert "render-node-with-a-long-name-07" in words and "…" not in table
    gpu_lines = [line for line in table.splitlines() if "NVIDIA" in line or DRIVER in line]
    if columns == "200":
        assert len(gpu_lines) == 1, "room enough: one line per host"
    else:
        assert len(gpu_lines) == 2 and DRIVER not in gpu_lines[0], "narrow: the GPU cell wraps between words"


def _plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=100), out


def test_plain_download_lines_are_rate_limited_by_share_and_time() -> None:
    console, out = _plain_console()
    now = [0.0]
    progress = ApplyProgress(str, console=console, clock=lambda: now[0])
    total = 1000 * 1024 * 1024
    with progress:
        progress.on_event({"event": "progress", "phase": "applying", "id": "download:m.bin", "changes": []})
        for step in range(1, 101):  # a count every 0.1 s, 1% each
            now[0] = step * 0.1
            progress.on_event({"event": "progress", "phase": "bytes", "id": "download:m.bin",
                               "done": total * step // 100, "total": total})
        progress.on_event({"event": "progress", "phase": "changed", "id": "download:m.bin", "seconds": 10.0})
    lines = out.getvalue().splitlines()
    counts = [line for line in lines if line.startswith("    download:m.bin: ")]
    assert 9 <= len(counts) <= 12, counts  # every 10%, not every event
    assert counts[-1].startswith("    download:m.bin: 1000.0 MiB of 1000.0 MiB (100%)")
    assert "ETA" in counts[1] and "MiB/s" in counts[1]
    assert lines[0] == "  … download:m.bin" and lines[-1] == "  ✓ download:m.bin  10.00s"
    assert "\x1b" not in out.getvalue()


def test_plain_lines_show_steps_failures_and_masked_secrets() -> None:
    console, out = _plain_console()
    progress = ApplyProgress(lambda text: text.replace("s3cret", "***"), console=console)
    with progress:
        progress.on_event({"event": "progress", "phase": "applying", "id": "pip:venv", "changes": []})
        progress.on_event({"event": "progress", "phase": "step", "message": "pip install of torch"})
        progress.on_event({"event": "progress", "phase": "failed", "id": "pip:venv", "error": "bad s3cret\nmore"})
        progress.on_event({"event": "log", "message": "not shown without --verbose"})
    assert out.getvalue().splitlines() == ["  … pip:venv", "    pip:venv: pip install of torch",
                                           "  x pip:venv  bad ***"]


def test_fleet_progress_counts_done_failed_and_remaining() -> None:
    console, out = _plain_console()
    progress = FleetProgress(console=console)
    with progress.start(["a", "b", "c"]):
        progress("a", "done", "ok, 1 changed, gen 1, 0.20s")
        progress("b", "done", "failed, 0 changed, 0.10s — boom")
    lines = out.getvalue().splitlines()
    assert "  [hosts: 1 done, 0 failed, 2 remaining]" in lines
    assert lines[-1] == "  [hosts: 1 done, 1 failed, 1 remaining]"
