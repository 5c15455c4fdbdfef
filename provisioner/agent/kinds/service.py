"""A long-running service (ComfyUI): a systemd unit where systemd runs, else a supervised process.

The process manager starts the program in its own session (it outlives the agent and the SSH
channel), records its PID, argv and config digest under <root>/.provision/services/, and logs to a
file. A changed argv or config digest means a restart; a dead process means a start.

A record's PID is signalled only while that PID is still the process the record describes: its start
time (/proc/PID/stat field 22, in clock ticks since boot) and command line, read when it started, must
both match. A recycled PID, or a record someone wrote by hand pointing at another process, is reported
and left alone.

"Started" means healthy: with a `ready` probe, a start or restart waits (bounded by `ready_timeout`)
until the service answers it over HTTP; without one, the process must survive `settle_seconds`. A
service that dies or never answers fails the resource with its exit status and log tail, is stopped,
and leaves no PID record behind. The record is written as soon as the process exists (`ready: false`)
and marked ready after the wait, so a run killed in between leaves a process the next run restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

from .. import launch, procs
from ..fsutil import atomic_write
from ..protocol import Change, Context, ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional

STOP_TIMEOUT_SECONDS = 15.0
READY_POLL_SECONDS = 0.5
DEFAULT_READY_TIMEOUT = 180.0
SYSTEMD_DIR = "/etc/systemd/system"
ROOT_PLACEHOLDER = "@PROVISION_ROOT@"


def _manager(spec: Dict[str, Any]) -> str:
    manager = spec.get("manager") or "auto"
    if manager == "auto":
        return "systemd" if os.path.isdir("/run/systemd/system") else "process"
    return manager


def _record_path(spec: Dict[str, Any], ctx: Context) -> str:
    return ctx.state_path("services", spec["name"] + ".json")


def _argv(spec: Dict[str, Any], ctx: Context) -> List[str]:
    """argv[0] relative to the root (e.g. venv/bin/python) is made absolute; the rest is passed as is."""
    first = spec["argv"][0]
    if "/" in first and not first.startswith("/"):
        first = ctx.program_path(first)
    return [first, *spec["argv"][1:]]


def _read_record(path: str) -> Optional[Dict[str, Any]]:
    from ..statedir import read_text

    try:
        record = json.loads(read_text(path) or "null")
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int) or not isinstance(
            record.get("argv"), list):
        return None
    return record


def _identity(pid: int) -> Optional[Dict[str, Any]]:
    """Start time and command line of a live (not zombie) process, or None."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except (OSError, IndexError):
        return None
    # Fields after the ")" that ends the command name start at field 3 (state); starttime is field 22.
    if fields[0] == "Z" or len(fields) < 20:
        return None
    return {"start_ticks": int(fields[19]), "cmdline": cmdline}


def _ours(record: Dict[str, Any]) -> Optional[str]:
    """None when the record's PID is the process it describes; else why it is not (it is left alone)."""
    pid = record["pid"]
    if pid <= 1:
        return "the record names PID %d, which is never ours" % pid
    now = _identity(pid)
    if now is None:
        return "process %d is not running" % pid
    if record.get("ready") is False:
        # Killed while it started: only the start time is recorded, and the program (or the launcher that
        # execs it) has the recorded argv as the end of its command line (a script's interpreter may precede).
        argv = record["argv"]
        same_command = bool(argv) and now["cmdline"][-len(argv):] == argv
    else:
        same_command = record.get("cmdline") == now["cmdline"]
    if record.get("start_ticks") != now["start_ticks"] or not same_command:
        return ("PID %d is another process (its start time or command line differ from the service record): "
                "left alone" % pid)
    return None


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    if _manager(spec) == "systemd":
        return _probe_systemd(spec, ctx)
    record = _read_record(_record_path(spec, ctx))
    why = _ours(record) if record else "not started yet"
    if why and record:
        from ..protocol import log

        log("service %s: %s" % (spec["name"], why))
    return {"manager": "process", "running": why is None, "record": record, "why": why}


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    want_running = spec.get("state", "running") == "running"
    if observed["manager"] == "systemd":
        return _diff_systemd(spec, observed, ctx, want_running)
    record = observed["record"]
    if not want_running:
        return [Change("state", "running", "stopped", "service is running", "stop")] if observed["running"] else []
    if not observed["running"]:
        reason = observed.get("why") or "not running"
        return [Change("state", "stopped", "running", reason, "create" if record is None else "start")]
    if record.get("ready") is False:
        return [Change("state", "starting", "running", "the start of process %s was interrupted before it was "
                       "ready; it is restarted" % record["pid"], "restart")]
    changes = []
    if record["argv"] != _argv(spec, ctx):
        changes.append(Change("argv", " ".join(record["argv"]), " ".join(_argv(spec, ctx)),
                              "command line changed; restart", "restart"))
    wanted_env = spec.get("env") or {}
    if (record.get("env") or {}) != wanted_env:
        changes.append(Change("env", _env_text(record.get("env") or {}), _env_text(wanted_env),
                              "service environment changed (e.g. its GPU); restart", "restart"))
    return changes


def _env_text(env: Dict[str, str]) -> str:
    return " ".join("%s=%s" % item for item in sorted(env.items())) or "(none)"


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    if observed["manager"] == "systemd":
        _apply_systemd(spec, changes, ctx)
        return
    if observed["running"]:
        _stop(int(observed["record"]["pid"]))
    if spec.get("state", "running") == "running":
        _start(spec, ctx)
    else:
        _remove(_record_path(spec, ctx))


def remove(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> None:
    """Stop the service through its verified record (a PID that is another process is left alone), then
    remove the record, or disable the unit and remove its file."""
    if observed["manager"] == "systemd":
        name = _unit_name(spec)
        procs.run(["systemctl", "disable", "--now", name])
        _remove(_unit_path(spec))
        procs.check(["systemctl", "daemon-reload"], "systemctl daemon-reload")
        return
    if observed["running"]:
        _stop(int(observed["record"]["pid"]))
    _remove(_record_path(spec, ctx))


def restart(spec: Dict[str, Any], ctx: Context) -> None:
    """Handler action: restart the service (start it if it is not running)."""
    observed = probe(spec, ctx)
    if observed["manager"] == "systemd":
        procs.check(["systemctl", "restart", _unit_name(spec)], "systemctl restart %s" % _unit_name(spec))
        _await_unit(spec)
        return
    if observed["running"]:
        _stop(int(observed["record"]["pid"]))
    _start(spec, ctx)


def _env(spec: Dict[str, Any], ctx: Context) -> Dict[str, str]:
    env = dict(os.environ)
    if spec.get("env_file"):
        path = ctx.path(spec["env_file"])
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    key, sep, value = line.rstrip("\n").partition("=")
                    if sep and key and not key.startswith("#"):
                        env[key.strip()] = value
    env.update(spec.get("env") or {})  # the service's own (its GPU) win over the shared env file
    return env


def _start(spec: Dict[str, Any], ctx: Context) -> None:
    argv = _argv(spec, ctx)
    record_path = _record_path(spec, ctx)
    _remove(record_path)  # whatever it described was stopped; the new process gets a record of its own
    cwd = ctx.path(spec["cwd"]) if spec.get("cwd") else ctx.root
    log_path = ctx.path(spec.get("log") or "logs/%s.log" % spec["name"])
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    record: Dict[str, Any] = {"argv": argv, "env": dict(spec.get("env") or {}), "log": log_path, "ready": False}

    def recorded(pid: int) -> None:
        # Before the program runs and before the wait, as not ready yet: a run killed while the service
        # starts leaves a record of it, and the next run restarts that one rather than start a second.
        # The start time is the process's own (exec keeps it); its command line is known once it is ready.
        identity = _identity(pid)
        record.update(pid=pid, started=time.time(), start_ticks=identity["start_ticks"] if identity else None)
        atomic_write(record_path, json.dumps(record).encode("utf-8"), 0o644)

    try:  # appended to, never through a link
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ResourceFailure("cannot open the log %s: %s (a link there is never followed; remove it)"
                              % (log_path, exc.strerror)) from None
    with os.fdopen(log_fd, "ab") as log:
        offset = log.tell()
        child = launch.start(argv, cwd, _env(spec, ctx), log, recorded)
    try:
        _await_process(spec, child, log_path, offset)
    except ResourceFailure:
        if child.poll() is None:
            _stop(child.pid)
        _remove(record_path)
        raise
    identity = _identity(child.pid)
    if identity is None:
        raise ResourceFailure("%s exited right after becoming ready; see %s:\n%s" % (
            spec["name"], log_path, _tail(log_path, offset)))
    record.update(identity, ready=True)
    atomic_write(record_path, json.dumps(record).encode("utf-8"), 0o644)


def _await_process(spec: Dict[str, Any], child: subprocess.Popen, log_path: str, offset: int) -> None:  # type: ignore[type-arg]
    """Return once the child passes the readiness probe; raise when it exits or the timeout passes."""
    readiness = spec.get("ready")
    if not readiness:
        time.sleep(float(spec.get("settle_seconds", 1.0)))
        if child.poll() is not None:
            raise ResourceFailure("%s %s right after starting; see %s:\n%s" % (
                spec["name"], _exit_text(child.returncode), log_path, _tail(log_path, offset)))
        return

    def ended() -> Optional[str]:
        return None if child.poll() is None else _exit_text(child.returncode)

    def fail(what: str, timed_out: bool) -> None:
        stopped = "; it was stopped" if timed_out else ""
        raise ResourceFailure("%s %s%s; see %s:\n%s" % (spec["name"], what, stopped, log_path,
                                                        _tail(log_path, offset)))

    _wait_ready(spec, readiness, ended, fail)


def _wait_ready(spec: Dict[str, Any], readiness: Dict[str, Any], ended: Callable[[], Optional[str]],
                fail: Callable[[str, bool], None]) -> None:
    """Poll the readiness probe until it answers. `ended()` says how the service ended (None while it
    runs); `fail(what, timed_out)` raises. Shared by the process manager and systemd."""
    url = ready_url(readiness)
    timeout = float(spec.get("ready_timeout") or DEFAULT_READY_TIMEOUT)
    started = time.time()
    deadline = started + timeout
    while True:
        how = ended()
        if how is not None:
            fail("%s %.1f s after starting, before %s answered" % (how, time.time() - started, url), False)
        answer = http_ready(url, bool(readiness.get("expect_json")), max(0.5, min(5.0, deadline - time.time())))
        if answer is None:
            return
        if time.time() >= deadline:
            fail("did not become ready within %g s (%s: %s)" % (timeout, url, answer), True)
        time.sleep(READY_POLL_SECONDS)


def ready_url(readiness: Dict[str, Any]) -> str:
    """The probe URL; a wildcard listen address (0.0.0.0, ::, or ComfyUI's comma list) is reached on loopback."""
    host = str(readiness.get("host") or "127.0.0.1").split(",")[0].strip()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = "[%s]" % host
    return "http://%s:%d%s" % (host, int(readiness["port"]), readiness.get("path") or "/")


def http_ready(url: str, expect_json: bool, timeout: float) -> Optional[str]:
    """None when `url` answers 200 (with JSON if asked), else what it answered instead."""
    import urllib.error
    import urllib.request

    # Loopback must never go through an HTTP proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            body = response.read(1 << 20)
            status = response.status
    except urllib.error.HTTPError as exc:
        return "HTTP %d" % exc.code
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return "no answer (%s)" % reason
    if status != 200:
        return "HTTP %d" % status
    if expect_json:
        try:
            json.loads(body.decode("utf-8"))
        except ValueError:
            return "HTTP 200 but not JSON"
    return None


def _exit_text(returncode: Optional[int]) -> str:
    if returncode is not None and returncode < 0:
        return "was killed by signal %d" % -returncode
    return "exited with %s" % returncode


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.time() + STOP_TIMEOUT_SECONDS
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
            reaped = os.waitpid(pid, os.WNOHANG) if _is_child(pid) else (0, 0)
            if reaped[0] == pid:
                return
        except (ProcessLookupError, ChildProcessError):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _is_child(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _tail(path: str, offset: int = 0, lines: int = 20) -> str:
    """The last lines this start wrote to the log (from `offset`), not an older run's."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- systemd -------------------------------------------------------------------------------------

def _unit_name(spec: Dict[str, Any]) -> str:
    return "provision-%s.service" % spec["name"]


def _unit_path(spec: Dict[str, Any]) -> str:
    return os.path.join(SYSTEMD_DIR, _unit_name(spec))


def _unit_text(spec: Dict[str, Any], ctx: Context) -> str:
    """The unit rendered on the controller, with the root it could not know filled in here."""
    return str(spec.get("unit") or "").replace(ROOT_PLACEHOLDER, ctx.root)


def _probe_systemd(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    try:
        with open(_unit_path(spec), encoding="utf-8") as handle:
            unit = handle.read()
    except OSError:
        unit = None
    active = procs.run(["systemctl", "is-active", "--quiet", _unit_name(spec)]).ok
    enabled = procs.run(["systemctl", "is-enabled", "--quiet", _unit_name(spec)]).ok
    return {"manager": "systemd", "unit": unit, "running": active, "enabled": enabled}


def _diff_systemd(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context, want_running: bool) -> List[Change]:
    changes = []
    if observed["unit"] != _unit_text(spec, ctx):
        changes.append(Change("unit", None if observed["unit"] is None else "differs", _unit_name(spec),
                              "unit file %s" % ("missing" if observed["unit"] is None else "differs"),
                              "create" if observed["unit"] is None else "update"))
    if want_running and not observed["running"]:
        changes.append(Change("state", "inactive", "active", "unit is not active", "start"))
    if not want_running and observed["running"]:
        changes.append(Change("state", "active", "inactive", "unit is active", "stop"))
    if want_running and not observed["enabled"]:
        changes.append(Change("enabled", False, True, "unit is not enabled at boot"))
    return changes


def _apply_systemd(spec: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    name = _unit_name(spec)
    if not spec.get("unit"):
        raise ResourceFailure("service %s: no unit text was rendered for systemd" % spec["name"])
    fields = {c["field"] for c in changes}
    if "unit" in fields:
        atomic_write(_unit_path(spec), _unit_text(spec, ctx).encode("utf-8"), 0o644)
        procs.check(["systemctl", "daemon-reload"], "systemctl daemon-reload")
    if spec.get("state", "running") == "running":
        procs.check(["systemctl", "enable", name], "systemctl enable %s" % name)
        verb = "restart" if "unit" in fields else "start"
        procs.check(["systemctl", verb, name], "systemctl %s %s" % (verb, name))
        _await_unit(spec)
    else:
        procs.check(["systemctl", "disable", "--now", name], "systemctl disable --now %s" % name)


def _await_unit(spec: Dict[str, Any]) -> None:
    """Return once the unit passes the readiness probe; else stop it (so it is not reported as running) and
    fail with its state and journal. systemd's Restart=on-failure would keep a crashing ComfyUI flapping."""
    name = _unit_name(spec)
    readiness = spec.get("ready")
    if not readiness:
        time.sleep(float(spec.get("settle_seconds", 1.0)))
        state = _unit_state(name)
        if state != "active":
            _fail_unit(name, "is %s right after starting" % state)
        return
    restarts = _unit_restarts(name)

    def ended() -> Optional[str]:
        return "exited" if _unit_state(name) == "failed" or _unit_restarts(name) > restarts else None

    def fail(what: str, timed_out: bool) -> None:
        _fail_unit(name, what + ("; unit %s" % _unit_state(name) if timed_out else ""))

    _wait_ready(spec, readiness, ended, fail)


def _unit_state(name: str) -> str:
    return procs.run(["systemctl", "is-active", name]).output.strip() or "unknown"


def _unit_restarts(name: str) -> int:
    """How often systemd restarted the unit (Restart=on-failure): a rise means the process died."""
    value = procs.run(["systemctl", "show", "-p", "NRestarts", "--value", name]).output.strip()
    return int(value) if value.isdigit() else 0


def _fail_unit(name: str, what: str) -> None:
    status = procs.run(["systemctl", "show", "-p", "ExecMainStatus", "--value", name]).output.strip()
    journal = procs.run(["journalctl", "-u", name, "-n", "20", "--no-pager", "-o", "cat"]).tail()
    procs.run(["systemctl", "stop", name])
    raise ResourceFailure("%s %s (last exit status %s); it was stopped; journalctl -u %s:\n%s" % (
        name, what, status or "?", name, journal))
