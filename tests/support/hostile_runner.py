"""Run the hostile corpus in one process: `python -m tests.support.hostile_runner SEED COUNT WORKDIR [inventories]`.

For every manifest case it runs the real `provision validate` command in-process (click's test runner, so its
exit code and output are the user's) and the controller half of `provision plan` against saved host facts:
load, resolve, expand the roles and templates, and encode the request exactly as it goes to the agent.
For an inventory case it loads the inventory and selects its hosts, as `fleet plan` does before connecting.
Each step runs under a timer; the caller runs this process under a memory cap and a wall-clock limit, so a
hang or a blow-up is a reported failure, not a dead CI job. One JSON line per case on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from click.testing import CliRunner

from provisioner import __version__
from provisioner.cli import cli
from provisioner.engine import HostSession, expand_stack
from provisioner.errors import ProvisionError
from provisioner.facts import load_facts
from provisioner.fleet.inventory import load_inventory, select_hosts
from provisioner.manifest import load_manifest
from provisioner.preflight import resolve_or_refuse
from provisioner.stack import needs_resolution
from tests.support.hostile_manifests import Case, generate, generate_inventories

FACTS = Path(__file__).resolve().parents[1] / "unit" / "facts"
#: A step that takes longer than this is a hang (the slowest real ones take well under a second).
STEP_SECONDS = 10.0
#: The controller's environment for secrets: none of the manifests' secrets is set.
ENVIRON = {"PATH": os.environ.get("PATH", "")}


class StepTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise StepTimeout


def validate(case: Case, path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["validate", str(path)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        raise result.exception.with_traceback(result.exc_info[2])
    return result.exit_code, result.output


def offline_plan(case: Case, path: Path) -> tuple[int, str]:
    """Everything `plan` does before its one agent call, with the host's facts read from a file."""
    try:
        loaded = load_manifest(path)
        session = HostSession(loaded, environ=ENVIRON)
        if needs_resolution(loaded.manifest):
            facts = load_facts(FACTS / case.facts)
            resolution = resolve_or_refuse(loaded.manifest, facts, "gpu-host", loaded.source)
            expansion = expand_stack(loaded, facts, resolution, session.mirrors, ENVIRON).expansion
        else:
            expansion = session.expansion
        request = {"root": loaded.manifest.target.root, "options": {"force": False, "deep": False},
                   "manifest": {"name": loaded.manifest.name, "file": str(path), "provision": __version__},
                   **expansion.payload()}
        json.dumps(dict(request, op="probe")).encode("utf-8")
    except ProvisionError as exc:
        return 1, f"error: {exc}"
    return 0, f"{len(expansion.resources)} resources"


def inventory(case: Case, path: Path) -> tuple[int, str]:
    try:
        hosts = select_hosts(load_inventory(path), None)
    except ProvisionError as exc:
        return 1, f"error: {exc}"
    return 0, f"{len(hosts)} hosts"


def run_step(step: Callable[[Case, Path], tuple[int, str]], case: Case, path: Path) -> dict[str, Any]:
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, STEP_SECONDS)
    try:
        code, output = step(case, path)
        outcome: dict[str, Any] = {"exit": code, "output": output if len(output) < 4000 else
                                   f"{output[:2000]}\n[…]\n{output[-2000:]}"}
    except StepTimeout:
        outcome = {"exit": "hang", "output": f"no answer within {STEP_SECONDS} s"}
    except BaseException:  # any escape is what this corpus exists to find
        outcome = {"exit": "traceback", "output": traceback.format_exc()[-3000:]}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    outcome["seconds"] = round(time.monotonic() - started, 3)
    return outcome


def main(argv: list[str]) -> int:
    seed, count, workdir = int(argv[0]), int(argv[1]), Path(argv[2])
    inventories = argv[3:] == ["inventories"]
    steps: dict[str, Callable[[Case, Path], tuple[int, str]]] = (
        {"inventory": inventory} if inventories else {"validate": validate, "plan": offline_plan})
    signal.signal(signal.SIGALRM, _on_alarm)
    for case in (generate_inventories if inventories else generate)(seed, count):
        directory = workdir / case.name
        path = case.write(directory)
        record = {"case": case.name, "mutation": case.mutation, "entry": case.entry,
                  "files": [str(directory / name) for name in case.files],
                  "steps": {name: run_step(step, case, path) for name, step in steps.items()}}
        print(json.dumps(record), flush=True)
        shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
