"""Heartbeats while a request runs, and what the agent does when its controller is gone.

The controller fails a host whose agent has been silent for `target.inactivity_timeout` seconds. A long
step (pip, git, a 12 GB download, a venv, a handler, a service readiness wait) writes nothing for
minutes, so a thread writes a `heartbeat` event every `heartbeat` seconds (the interval comes in the
request: the controller picks it below its own limit). Silence then means a dead or frozen host.

The same writes tell the agent that nobody reads its stdout any more: the controller was killed, gave up
on the host, or sshd's session process died. Such an orphaned agent must not go on changing the host
behind the next apply's back, so it stops at once and deterministically: the heartbeat thread
interrupts the main thread with SIGTERM, the running step's child processes are stopped (procs.run),
`finally` blocks clean up, and the agent exits. An interrupted step is what a kill at that point leaves,
which every resource kind recovers from on the next apply.
"""

from __future__ import annotations

import os
import signal
import threading

from . import main
from .protocol import ControllerLost, emit

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

#: Exit status of an agent stopped by a signal or by losing its controller (nobody may be reading it).
STOPPED_EXIT = 143


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like a kill would, but run the `finally` blocks on the way.

    A BaseException, so that no `except Exception` in a resource kind turns it into a resource failure
    and carries on with the next resource.
    """


def serve(request: Dict[str, Any]) -> int:
    """main.serve with heartbeats, and a clean stop on SIGTERM/SIGHUP or a controller that went away."""
    lost = threading.Event()
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, _raise_stopped)
    beat = _start(request.get("heartbeat"), lost)
    try:
        return main.serve(request)
    except Stopped as exc:
        if not lost.is_set():
            try:  # stopped by someone on the host while the controller still listens: say so
                emit("error", error="the agent was stopped by signal %d" % exc.args[0], kind="failure")
                return STOPPED_EXIT
            except ControllerLost:
                pass
        _silence_stdout()
        return STOPPED_EXIT
    except ControllerLost:
        _silence_stdout()
        return STOPPED_EXIT
    finally:
        if beat is not None:
            beat.stop()


class _Beat:
    def __init__(self, interval: float, lost: threading.Event) -> None:
        self.interval = interval
        self.lost = lost
        self.done = threading.Event()
        self.main_ident = threading.main_thread().ident
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                emit("heartbeat")
            except ControllerLost:
                self.lost.set()
                if not self.done.is_set() and self.main_ident is not None:
                    # A signal to the main thread itself: it interrupts the blocking call it sits in
                    # (waiting for pip, reading a socket, sleeping), which a flag would not.
                    signal.pthread_kill(self.main_ident, signal.SIGTERM)
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=self.interval + 1)


def _start(interval: Any, lost: threading.Event) -> Optional[_Beat]:
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
        return None  # a controller that expects no heartbeats
    beat = _Beat(float(interval), lost)
    beat.thread.start()
    return beat


def _raise_stopped(signum: int, frame: Any) -> None:
    # Once is enough: a second signal during the unwinding must not interrupt a `finally` block.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise Stopped(signum)


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's final flush would fail on the dead pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
