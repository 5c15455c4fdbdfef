"""Run a command as a hostile-input test must: under a memory cap and a wall-clock limit, killed by its PID.

A hang or a memory blow-up of the program under test becomes a result ("hang", or a MemoryError
traceback), never a stuck or dead CI job.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: The issue measured hangs as "> 2 GB RSS"; no real manifest needs a tenth of that.
MEMORY_CAP_BYTES = 2 * 1024**3


@dataclass
class Bounded:
    returncode: int | None  # None: killed at the time limit
    stdout: str
    stderr: str
    seconds: float

    @property
    def hung(self) -> bool:
        return self.returncode is None


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_BYTES, MEMORY_CAP_BYTES))


def run_bounded(argv: list[str], timeout: float, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> Bounded:
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", stdin=subprocess.DEVNULL, preexec_fn=_limit_memory,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the agent it started goes too
        stdout, stderr = proc.communicate()
        code = None
    return Bounded(code, stdout, stderr, round(time.monotonic() - started, 3))
