"""Controller side of the host agent: ship its modules with the request, stream its events back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

from provisioner.errors import AgentError, TransportError
from provisioner.transport.base import Transport
from provisioner.transport.inactivity import heartbeat_interval

PROTOCOL_VERSION = 1
HOST_PACKAGE = "provision_agent"

# Runs on the host as `python3 -I -S -c BOOTSTRAP`: a constant, so no manifest value ever reaches argv.
# It serves the request from an in-memory package built from the stdin document's modules. Compiling them
# costs more than the rest of a no-op probe, so the compiled code is kept per user in
# $XDG_CACHE_HOME/provision (~/.cache/provision), keyed by the sources' digest and the interpreter's
# bytecode tag, and only ever loaded from a directory and file that user owns and nobody else can write.
# Each module's code is kept as its own marshal blob and loaded only when imported: a call uses a few of
# the resource kinds, not all.
# -I: neither the login directory nor PYTHON* variables can put other modules in place of the standard
# library the agent imports; -S: no site-packages, which a stdlib-only agent never needs (and whose .pth
# files cost start-up time).
AGENT_FLAGS = ("-I", "-S")
BOOTSTRAP = """\
import sys, os, json, marshal
from importlib.machinery import ModuleSpec
doc = json.loads(sys.stdin.buffer.read().decode("utf-8"))
mods = doc["modules"]
def private(st):
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022
def compiled():
    cache = name = None
    try:
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):
            import pwd
            base = os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".cache")
        cache = os.path.join(base, "provision")
        name = "agent-%s-%s.marshal" % (doc["digest"], sys.implementation.cache_tag)
        with open(os.path.join(cache, name), "rb") as f:
            if private(os.stat(cache)) and private(os.fstat(f.fileno())):
                loaded = marshal.load(f)
                if isinstance(loaded, dict) and set(loaded) == set(mods) and \
                        all(type(v) is bytes for v in loaded.values()):
                    return loaded
    except Exception:
        pass
    code = dict((n, marshal.dumps(compile(s, "<agent:" + n + ">", "exec"))) for n, s in mods.items())
    try:
        os.makedirs(cache, mode=0o700, exist_ok=True)
        if private(os.stat(cache)):
            for old in os.listdir(cache):
                if old.startswith("agent-") and old != name:
                    os.unlink(os.path.join(cache, old))
            tmp = os.path.join(cache, "%s.%d.tmp" % (name, os.getpid()))
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                marshal.dump(code, f)
            os.replace(tmp, os.path.join(cache, name))
    except Exception:
        pass
    return code
code = compiled()
class Finder:
    def find_spec(self, name, path=None, target=None):
        if name in code or name + ".__init__" in code:
            return ModuleSpec(name, self, is_package=name + ".__init__" in code)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        name = module.__name__
        exec(marshal.loads(code.get(name + ".__init__") or code[name]), module.__dict__)
sys.meta_path.insert(0, Finder())
sys.dont_write_bytecode = True
import provision_agent.heartbeat
sys.exit(provision_agent.heartbeat.serve(doc["request"]))
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


@lru_cache(maxsize=1)
def agent_digest() -> str:
    """Names the agent's sources: the host's compiled-code cache is keyed by it."""
    canonical = json.dumps(agent_modules(), sort_keys=True).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()[:32]


@lru_cache(maxsize=1)
def _document_head() -> bytes:
    """The part of every request document that never changes, encoded once: a fleet run sends it to every
    host, and encoding ~85 kB of sources per call is controller time that grows with the fleet."""
    return b'{"modules": ' + json.dumps(agent_modules()).encode("utf-8") + \
        b', "digest": ' + json.dumps(agent_digest()).encode("utf-8") + b', "request": '


def request_document(op: str, request: dict[str, Any], heartbeat: float | None = None) -> bytes:
    """What the bootstrap reads on stdin: {"modules", "digest", "request"} as one JSON object.
    `heartbeat`: the interval at which the agent writes a heartbeat event while it works."""
    body = json.dumps(dict(request, op=op, protocol=PROTOCOL_VERSION, heartbeat=heartbeat)).encode("utf-8")
    return _document_head() + body + b"}"


class AgentClient:
    """Sends one request per call over a transport and returns the agent's result.

    Every call has two limits: `timeout` for the whole call (target.command_timeout), and the transport's
    inactivity limit (target.inactivity_timeout): the agent writes a heartbeat at a quarter of it while a
    long step runs, so a call that stays silent that long is a dead or frozen host and fails at once."""

    def __init__(self, transport: Transport, python: str = "python3", timeout: float | None = None) -> None:
        self.transport = transport
        self.python = python
        self.timeout = timeout
        self.inactivity_timeout = transport.inactivity_timeout
        self.calls = 0

    def call(self, op: str, request: dict[str, Any], on_event: EventCallback | None = None) -> dict[str, Any]:
        payload = request_document(op, request, heartbeat_interval(self.inactivity_timeout))
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
            if event["event"] == "heartbeat":
                return  # it only says "still working", and it already reset the inactivity timer
            events.append(event)
            if on_event and event["event"] not in ("result", "error"):
                on_event(event)

        self.calls += 1
        done = self.transport.run(
            [self.python, *AGENT_FLAGS, "-c", BOOTSTRAP], stdin=payload, timeout=self.timeout, on_stdout_line=on_line,
            idle_timeout=self.inactivity_timeout,
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
