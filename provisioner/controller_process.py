"""This controller process as others can find it again: host, pid and the pid's start time.

A ledger row written at the start of a run names the process that runs it; if the run never got to
finish its row (SIGKILL, a lost machine), the row still says `running`, and whether that process is
gone tells `history` the run was interrupted. The start time tells a recycled pid from the original.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


def _stat(pid: int) -> tuple[str, int] | None:
    """The process's state letter and start time in clock ticks since boot (Linux /proc); None where it
    cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])  # fields 3 and 22 of proc(5); pid and comm are cut off above
    except (OSError, IndexError, ValueError):
        return None


def _start_ticks(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[1] if stat else None


@dataclass(frozen=True)
class ControllerProcess:
    host: str
    pid: int
    start_ticks: int | None

    @classmethod
    def current(cls) -> ControllerProcess:
        return cls(socket.gethostname(), os.getpid(), _start_ticks(os.getpid()))

    def is_gone(self) -> bool | None:
        """True when this process no longer runs; None when it ran on another host (we cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # it exists, under another user
        stat = _stat(self.pid)
        if stat is None:
            return False
        state, ticks = stat
        # A zombie has died (its parent has not reaped it yet); other start ticks: the pid was recycled.
        return state == "Z" or (self.start_ticks is not None and ticks != self.start_ticks)
