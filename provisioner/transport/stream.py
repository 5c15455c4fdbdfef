"""A local child process run the way every transport runs a command: stdin fed, stdout handed over line
by line as it arrives, stderr collected, a whole-run limit and an inactivity limit. The local transport
runs the program itself; the docker transport runs the `docker exec` client."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from provisioner.errors import TransportError
from provisioner.transport.base import LineCallback
from provisioner.transport.inactivity import Watchdog, stop_process


@dataclass(frozen=True)
class Streamed:
    returncode: int
    stdout: str
    stderr: str
    #: Why the program was stopped early: "idle" (it sent nothing for `idle_timeout`) or "timeout".
    stopped: Literal["idle", "timeout"] | None


def stream(argv: Sequence[str], stdin: bytes, env: Mapping[str, str], *, cwd: Path | None = None,
           timeout: float | None = None, on_line: LineCallback | None = None,
           idle_timeout: float | None = None) -> Streamed:
    """Run `argv` to its end. If this returns early by an exception (Ctrl-C, a callback that raised), the
    program is stopped as an abandoned one is: SIGTERM (an agent then stops its step), SIGKILL after a
    grace, so nothing keeps changing the host behind the caller's back."""
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise TransportError(f"local: cannot run {argv[0]}: {exc}") from None
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr_chunks: list[bytes] = []
    # stdin and stderr each get a thread: a large payload or a chatty program must not deadlock against
    # the stdout loop.
    threads = [threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True),
               threading.Thread(target=_drain, args=(proc.stderr, stderr_chunks), daemon=True)]
    for thread in threads:
        thread.start()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    lines: list[str] = []
    timer = threading.Timer(timeout, expire) if timeout else None
    watchdog = Watchdog(idle_timeout, lambda: stop_process(proc)) if idle_timeout else None
    try:
        if timer:
            timer.daemon = True  # a timer left by an interrupted run must not hold the interpreter's exit
            timer.start()
        with watchdog or contextlib.nullcontext():
            for raw in proc.stdout:
                if watchdog:
                    watchdog.touch()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                if on_line:
                    on_line(line)
            proc.wait()
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:
            stop_process(proc)
    for thread in threads:
        thread.join()
    stopped: Literal["idle", "timeout"] | None = (
        "idle" if watchdog and watchdog.expired else "timeout" if timed_out.is_set() else None)
    return Streamed(proc.returncode, "\n".join(lines), b"".join(stderr_chunks).decode("utf-8", "replace"), stopped)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # BrokenPipeError included: the program exited without reading everything
        pass


def _drain(pipe: IO[bytes], chunks: list[bytes]) -> None:
    chunks.append(pipe.read())
