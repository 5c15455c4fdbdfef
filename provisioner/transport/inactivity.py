"""The inactivity limit of a call: a host that sends nothing for `limit` seconds is given up on.

`command_timeout` caps a whole call (an hour by default: a model download is slow), so on its own it
lets a frozen host hang a run for that long. The agent writes a heartbeat every few seconds while a
long step runs (agent/heartbeat.py), so a call that streams nothing for `target.inactivity_timeout`
seconds is talking to a dead or frozen host, not to slow work.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

from provisioner.errors import TransportError

#: target.inactivity_timeout's default: far above the agent's heartbeat interval, and above the pauses a
#: loaded host can take (a swap storm, a stalled disk) without being dead.
DEFAULT_INACTIVITY_TIMEOUT_S = 120.0
#: The agent's heartbeat interval is this fraction of the limit (capped): several beats fit in one limit,
#: so one late beat never fails a host.
HEARTBEATS_PER_LIMIT = 4
MAX_HEARTBEAT_S = 10.0
#: How long an abandoned local program gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 2.0


def heartbeat_interval(limit: float) -> float:
    """How often the agent must write while it works, for a controller that waits `limit` seconds."""
    return round(min(MAX_HEARTBEAT_S, limit / HEARTBEATS_PER_LIMIT), 3)


def inactivity_error(display: str, program: str, limit: float) -> TransportError:
    return TransportError(
        f"{display}: {program} sent nothing for {limit:g}s (target.inactivity_timeout) and was abandoned: "
        "the host, its agent or the connection stopped answering (frozen, overloaded or cut off). Check the host and "
        "apply again; raise target.inactivity_timeout if the host is only very slow"
    )


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM (the agent then stops the step it runs, see agent/heartbeat.py), SIGKILL after `grace`:
    a frozen (SIGSTOPped) program handles nothing."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()


class Watchdog:
    """Calls `expire` once when `touch` has not been called for `limit` seconds (until `stop`)."""

    def __init__(self, limit: float, expire: Callable[[], None]) -> None:
        self.limit = limit
        self._expire = expire
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self.expired = False
        self._thread = threading.Thread(target=self._watch, name="inactivity-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def touch(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while True:
            left = self._last + self.limit - time.monotonic()
            if left <= 0:
                self.expired = True
                self._expire()
                return
            if self._stopped.wait(left):
                return
