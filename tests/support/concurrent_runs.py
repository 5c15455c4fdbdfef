"""Real `provision` processes started side by side on one root, and the root lock they fight over."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.hosts import TargetHost

PROVISION = [sys.executable, "-m", "provisioner"]
RUN_TIMEOUT_S = 120.0
LOCK_FILE = ".provision/root.lock"
#: Touched when the slow step starts (left in place, outside what the manifests manage).
SLOW_STEP = "slow-step-started"


def two_state_manifest(directory: Path, host: TargetHost, letter: str, slow_seconds: float = 1.0,
                       filename: str | None = None, gate: Path | None = None) -> Path:
    """A manifest that puts `letter` in three places, the middle one after a slow step (a service's
    config rendered by a program, say): two runs that interleave leave the root matching neither.

    With `gate`, the slow step lasts until that file exists (at most `slow_seconds`), so a test holds
    the root for exactly as long as it needs, however slowly a loaded machine runs its other steps."""
    if gate is None:
        wait = f"sleep {slow_seconds}"
    else:
        ticks = int(slow_seconds * 10)
        wait = (f"i=0; while [ ! -e {shlex.quote(str(gate))} ] && [ $i -lt {ticks} ]; "
                "do sleep 0.1; i=$((i+1)); done")
    document = {
        "name": f"state-{letter.lower()}",
        "target": host.target(),
        "resources": [
            {"kind": "file", "path": "one.txt", "content": f"{letter}\n"},
            {"kind": "command", "name": "mark", "unless": ["grep", "-qx", letter, "mark.txt"],
             "argv": ["sh", "-c", f"touch {SLOW_STEP}; {wait}; echo {letter} > mark.txt"]},
            {"kind": "file", "path": "two.txt", "content": f"{letter}\n"},
        ],
    }
    path = directory / (filename or f"state-{letter.lower()}.yaml")
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Finished:
    args: tuple[str, ...]
    pid: int
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]


class Run:
    """One `provision` process in its own process group (so a test can signal it as a terminal would).

    Its output goes to files rather than pipes, so a test can read what it has said while it runs."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        # Open for the run's whole life (closed by finish); unnamed, so nothing is left behind.
        self._stdout = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
        # PYTHONFAULTHANDLER: a run that hangs is sent SIGABRT (finish), and prints where each thread was.
        self.process = subprocess.Popen([*PROVISION, *args], stdout=self._stdout, stderr=self._stderr,
                                        text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
                                        start_new_session=True)
        self.pid = self.process.pid

    @staticmethod
    def _read(stream: Any) -> str:
        stream.seek(0)
        return stream.read()  # type: ignore[no-any-return]

    def stderr_so_far(self) -> str:
        return self._read(self._stderr)

    def wait_for_stderr(self, text: str, timeout: float = 60.0) -> str:
        """Block until the run has written `text` to stderr, and return what it has written; fail if it
        ends or the time runs out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            said = self.stderr_so_far()
            if text in said:
                return said
            if self.process.poll() is not None:
                raise AssertionError(f"{self.args} ended (exit {self.process.returncode}) without saying "
                                     f"{text!r}: {self.stderr_so_far()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.args} did not say {text!r} within {timeout}s: {self.stderr_so_far()}")

    def finish(self, timeout: float = RUN_TIMEOUT_S) -> Finished:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGABRT)  # its threads' stacks go to stderr
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            raise AssertionError(f"{self.args} did not end within {timeout:g}s; it said: "
                                 f"{self.stderr_so_far()}") from None
        finally:
            self.kill()
        finished = Finished(self.args, self.pid, self.process.returncode,
                            self._read(self._stdout), self._read(self._stderr))
        self._stdout.close()
        self._stderr.close()
        return finished

    def signal_group(self, signum: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL whatever is left of the process group (the agent and its children included)."""
        self.signal_group(signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def run(*args: str, env: dict[str, str] | None = None) -> Finished:
    return Run(*args, env=env).finish()


def lock_holder(root: str) -> dict[str, Any] | None:
    """What the lock file says about its holder (the holder writes it, and clears it on release)."""
    try:
        text = Path(root, LOCK_FILE).read_text()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def wait_for_holder(root: str, run: Run, timeout: float = 60.0) -> dict[str, Any]:
    """Block until `run` (its controller) holds the root's lock; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lock_holder(root)
        if holder and holder.get("controller", {}).get("pid") == run.pid:
            return holder
        if run.process.poll() is not None:
            raise AssertionError(f"{run.args} ended (exit {run.process.returncode}) before taking the lock: "
                                 f"{run.stderr_so_far()}")
        time.sleep(0.05)
    raise AssertionError(f"{run.args} did not take the lock on {root} within {timeout}s")


def wait_for_slow_step(root: str, run: Run, timeout: float = 60.0) -> None:
    """Block until `run` is inside its slow step (deleting an earlier run's marker first)."""
    marker = Path(root, SLOW_STEP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists():
            marker.unlink()
            return
        if run.process.poll() is not None:
            raise AssertionError(f"{run.args} ended (exit {run.process.returncode}) before its slow step")
        time.sleep(0.05)
    raise AssertionError(f"{run.args} did not reach its slow step within {timeout}s")


def generation_files(root: str) -> dict[int, dict[str, Any]]:
    folder = Path(root, ".provision", "generations")
    return {int(p.stem): json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
