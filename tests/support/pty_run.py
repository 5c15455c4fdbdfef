"""Run the `provision` command on a pseudo-terminal, as a user's shell would, and keep all it wrote."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import dataclass

PROVISION = [sys.executable, "-m", "provisioner"]


@dataclass
class TerminalRun:
    returncode: int
    #: stdout and stderr together, as the terminal received them (control codes included).
    output: str


def run_on_pty(*args: str, env: dict[str, str], timeout: float = 120) -> TerminalRun:
    """stdout and stderr both on the terminal, `env` its whole environment; the child is killed (by PID)
    if it outlives `timeout`."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*PROVISION, *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side of the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        os.close(master)
    return TerminalRun(proc.returncode, b"".join(chunks).decode("utf-8", "replace"))
