"""Controller side of the host agent: ship its modules with the request, stream its events back."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

from provisioner.errors import AgentError, TransportError
from provisioner.transport.base import Transport

PROTOCOL_VERSION = 1
HOST_PACKAGE = "provision_agent"

# Runs on the host as `python3 -c BOOTSTRAP`: a constant, so no manifest value ever reaches argv.
# It loads the agent's modules from the stdin document into an in-memory package and serves the request.
BOOTSTRAP = """\
import sys, json, importlib.abc, importlib.util
doc = json.loads(sys.stdin.buffer.read().decode("utf-8"))
mods = doc["modules"]
class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name in mods or name + ".__init__" in mods:
            return importlib.util.spec_from_loader(name, self, is_package=name + ".__init__" in mods)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        name = module.__name__
        source = mods.get(name + ".__init__", mods.get(name))
        exec(compile(source, "<agent:" + name + ">", "exec"), module.__dict__)
sys.meta_path.insert(0, Finder())
sys.dont_write_bytecode = True
import provision_agent.main
sys.exit(provision_agent.main.serve(doc["request"]))
"""

EventCallback = Callable[[dict[str, Any]], None]


@lru_cache(maxsize=1)
def agent_modules() -> dict[str, str]:
    """Source of every agent module, keyed by its dotted name under the host package."""
    modules: dict[str, str] = {}
    root = resources.files("provisioner.agent")

    def walk(node: Any, prefix: str) -> None:
        for entry in sorted(node.iterdir(), key=lambda e: e.name):
            if entry.is_dir() and entry.name != "__pycache__":
                walk(entry, f"{prefix}.{entry.name}")
            elif entry.name.endswith(".py"):
                stem = entry.name[:-3]
                modules[f"{prefix}.{stem}"] = entry.read_text(encoding="utf-8")

    walk(root, HOST_PACKAGE)
    return modules


class AgentClient:
    """Sends one request per call over a transport and returns the agent's result."""

    def __init__(self, transport: Transport, python: str = "python3", timeout: float | None = None) -> None:
        self.transport = transport
        self.python = python
        self.timeout = timeout
        self.calls = 0

    def call(self, op: str, request: dict[str, Any], on_event: EventCallback | None = None) -> dict[str, Any]:
        document = {"modules": agent_modules(), "request": dict(request, op=op, protocol=PROTOCOL_VERSION)}
        payload = json.dumps(document).encode("utf-8")
        events: list[dict[str, Any]] = []
        stray: list[str] = []

        def on_line(line: str) -> None:
            try:
                event = json.loads(line)
            except ValueError:
                stray.append(line)
                return
            if not isinstance(event, dict) or "event" not in event:
                stray.append(line)
                return
            events.append(event)
            if on_event and event["event"] not in ("result", "error"):
                on_event(event)

        self.calls += 1
        done = self.transport.run(
            [self.python, "-c", BOOTSTRAP], stdin=payload, timeout=self.timeout, on_stdout_line=on_line
        )
        final = next((e for e in reversed(events) if e["event"] in ("result", "error")), None)
        if final is None:
            detail = (done.stderr.strip() or "\n".join(stray)).strip()[-2000:]
            if done.returncode == 127 or ("not found" in detail and self.python in detail):
                raise TransportError(
                    f"{self.transport.display}: the agent interpreter {self.python!r} was not found; "
                    "install Python >= 3.8 there or set target.python"
                )
            raise AgentError(
                f"{self.transport.display}: the agent exited {done.returncode} without a result"
                + (f":\n{detail}" if detail else "")
            )
        if final["event"] == "error":
            if final.get("kind") == "bug":
                raise AgentError(f"{self.transport.display}: internal agent error (please report):\n{final['error']}")
            raise AgentError(f"{self.transport.display}: {final['error']}")
        result: dict[str, Any] = final["result"]
        return result
