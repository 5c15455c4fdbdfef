"""Controller side of the checks: ship the check program to the host, run it, judge what comes back."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

from provisioner.checks.judge import CHECK_IDS, errored, judge, skipped
from provisioner.checks.model import CheckResult
from provisioner.checks.request import CheckPlan
from provisioner.errors import TransportError
from provisioner.transport.base import RunResult, Transport

HOST_PACKAGE = "provision_checks"

# Runs on the host as `<venv python> -c BOOTSTRAP`: a constant, so no manifest value reaches argv.
# The check modules arrive on stdin with the request and are imported from memory.
BOOTSTRAP = f"""\
import sys, json, importlib.abc, importlib.util
doc = json.loads(sys.stdin.buffer.read().decode("utf-8"))
mods = doc["modules"]
class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name in mods:
            return importlib.util.spec_from_loader(name, self, is_package=name == "{HOST_PACKAGE}")
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        exec(compile(mods[module.__name__], "<check:" + module.__name__ + ">", "exec"), module.__dict__)
sys.meta_path.insert(0, Finder())
sys.dont_write_bytecode = True
import {HOST_PACKAGE}.host_program
sys.exit({HOST_PACKAGE}.host_program.run(doc["request"]))
"""

ProgressCallback = Callable[[str], None]


@lru_cache(maxsize=1)
def host_modules() -> dict[str, str]:
    """The check program's modules (provisioner/checks/host_*.py) under the host package name."""
    modules = {HOST_PACKAGE: '"""Checks shipped by provision."""\n'}
    for entry in sorted(resources.files("provisioner.checks").iterdir(), key=lambda e: e.name):
        if entry.name.startswith("host_") and entry.name.endswith(".py"):
            modules[f"{HOST_PACKAGE}.{entry.name[:-3]}"] = entry.read_text(encoding="utf-8")
    return modules


def _group_checks(group: str) -> list[str]:
    return [c for c in CHECK_IDS if c.startswith(group + ".")]


def _interpreter_missing(result: RunResult | None, error: TransportError | None, python: str) -> bool:
    if error is not None:
        return "cannot run" in str(error) or "No such file" in str(error)
    assert result is not None
    text = result.stderr + result.stdout
    return result.returncode in (126, 127) and (python in text or "not found" in text or "No such file" in text)


def run_checks(transport: Transport, plan: CheckPlan, fallback_python: str, timeout: float | None = None,
               on_progress: ProgressCallback | None = None) -> list[CheckResult]:
    """Every check's verdict: those the host ran, then skips for the groups left out up front."""
    results: list[CheckResult] = []
    if plan.groups:
        outcome = _run_program(transport, plan.venv_python, plan.request, timeout, on_progress)
        if outcome is None:
            # No venv there: run with the host's own Python, which reports what it can (no GPU -> skips).
            request = dict(plan.request, venv_missing=True)
            outcome = _run_program(transport, fallback_python, request, timeout, on_progress)
            if outcome is None:
                raise TransportError(f"{transport.display}: neither {plan.venv_python} nor {fallback_python} "
                                     "could be run there")
        results.extend(_judge_events(plan, *outcome))
    for group, reason in plan.disabled.items():
        results.extend(skipped(check, reason) for check in _group_checks(group))
    for group, reason in plan.refused.items():
        results.extend(errored(check, reason) for check in _group_checks(group))
    order = {check: i for i, check in enumerate(CHECK_IDS)}
    if plan.instance:
        results = [r.model_copy(update={"instance": plan.instance}) for r in results]
    return sorted(results, key=lambda r: order.get(r.id, len(order)))


def run_instance_checks(transport: Transport, plans: list[CheckPlan], fallback_python: str,
                        timeout: float | None = None, on_progress: ProgressCallback | None = None) -> list[CheckResult]:
    """The checks of every ComfyUI instance, one after the other (each on its own GPU), grouped by check."""
    results = [r for plan in plans for r in run_checks(transport, plan, fallback_python, timeout, on_progress)]
    order = {check: i for i, check in enumerate(CHECK_IDS)}
    return sorted(results, key=lambda r: order.get(r.id, len(order)))


def _run_program(transport: Transport, python: str, request: dict[str, Any], timeout: float | None,
                 on_progress: ProgressCallback | None) -> tuple[list[dict[str, Any]], RunResult] | None:
    """(events, run result), or None when the interpreter does not exist on the host."""
    payload = json.dumps({"modules": host_modules(), "request": request}).encode("utf-8")
    events: list[dict[str, Any]] = []

    def on_line(line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return  # stray output of a library; the program routes its own output to stderr
        if isinstance(event, dict) and "event" in event:
            events.append(event)
            if on_progress and event["event"] == "start":
                on_progress(str(event.get("id")))

    try:
        done = transport.run([python, "-c", BOOTSTRAP], stdin=payload, timeout=timeout, on_stdout_line=on_line)
    except TransportError as exc:
        if _interpreter_missing(None, exc, python):
            return None
        raise
    if not events and _interpreter_missing(done, None, python):
        return None
    return events, done


def _judge_events(plan: CheckPlan, events: list[dict[str, Any]], done: RunResult) -> list[CheckResult]:
    results: list[CheckResult] = []
    judged: set[str] = set()
    started: str | None = None
    for event in events:
        if event["event"] == "start":
            started = str(event.get("id"))
        elif event["event"] == "check":
            check = str(event["id"])
            results.append(judge(check, event.get("observed") or {}, plan.criteria, event.get("seconds")))
            judged.add(check)
            started = None
    finished = any(e["event"] == "done" for e in events)
    if not finished:
        tail = (done.stderr.strip() or done.stdout.strip())[-1500:]
        crash = f"the check program exited {done.returncode}" + (f": {tail}" if tail else "")
        for group in plan.groups:
            for check in _group_checks(group):
                if check in judged:
                    continue
                reason = f"{crash} (while running this check)" if check == started else f"not run: {crash}"
                results.append(errored(check, reason))
    return results
