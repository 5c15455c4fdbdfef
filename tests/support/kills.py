"""Run a `provision` command in a process group of its own and SIGKILL the whole group at a chosen moment.

The moment is found from outside, the way an operator's Ctrl-\\ or the OOM killer would meet it: from the
lines the command streams, the files on the host and the processes of the group (read from /proc), never
from a hook in the code under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROVISION = [sys.executable, "-m", "provisioner"]
POLL_SECONDS = 0.003


@dataclass(frozen=True)
class Member:
    pid: int
    argv: tuple[str, ...]

    def runs(self, *words: str) -> bool:
        """Whether every word is one of the arguments (`runs("-m", "pip", "install")`)."""
        return all(word in self.argv for word in words)


def group_members(pgid: int) -> list[Member]:
    """The live processes of process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = tuple(part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part)
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
        members.append(Member(int(entry), argv))
    return members


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, Z, ...); None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def processes_running(argv_prefix: Sequence[str]) -> list[int]:
    """PIDs of every live process (any group) whose argv starts with `argv_prefix`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if process_state(int(entry)) in (None, "Z"):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = [part.decode("utf-8", "replace") for part in handle.read().split(b"\0")]
        except OSError:
            continue
        if argv[:len(argv_prefix)] == list(argv_prefix):
            pids.append(int(entry))
    return pids


@dataclass
class KilledRun:
    """What the command had done when it was killed."""

    argv: list[str]
    seconds: float
    stderr: list[str] = field(default_factory=list)


class GroupRun:
    """One command started with `start_new_session`, so its PID is the group every child inherits."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = [*PROVISION, *args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def members(self) -> list[Member]:
        return group_members(self.proc.pid)

    def said(self, fragment: str) -> bool:
        return any(fragment in line for line in list(self.stderr))

    def kill_when(self, moment: Callable[[GroupRun], bool], what: str, delay: float = 0.0,
                  timeout: float = 60.0) -> KilledRun:
        """Poll `moment` until it holds, wait `delay`, then SIGKILL the whole group.

        Fails when the command ends before the moment comes (the kill point was never reached) or the
        moment does not come within `timeout`.
        """
        deadline = time.monotonic() + timeout
        try:
            while not moment(self):
                if self.proc.poll() is not None:
                    raise AssertionError(f"the kill point '{what}' was never reached: {' '.join(self.argv[2:])} "
                                         f"ended first with exit {self.proc.returncode}:\n" + "\n".join(self.stderr))
                if time.monotonic() > deadline:
                    raise AssertionError(f"the kill point '{what}' did not come within {timeout:g} s")
                time.sleep(POLL_SECONDS)
            if delay:
                time.sleep(delay)
            if self.proc.poll() is not None:
                raise AssertionError(f"'{what}' + {delay:.3f} s: the command had already ended "
                                     f"(exit {self.proc.returncode})")
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        # The group is gone with its leader's exit only once every member is reaped by init.
        for _ in range(200):
            if not self.members():
                break
            time.sleep(0.01)
        return KilledRun(self.argv, round(self.elapsed, 3), list(self.stderr))


def names_under(root: Path) -> list[Path]:
    """Every path under `root` (not following links)."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        found.extend(Path(folder) / name for name in [*dirs, *files])
    return found
