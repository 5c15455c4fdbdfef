"""The local machine, through subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from provisioner.errors import TransportError
from provisioner.transport.base import LineCallback, RunResult, Transport
from provisioner.transport.inactivity import Watchdog, inactivity_error, stop_process


class LocalTransport(Transport):
    def __init__(self, cwd: Path | None = None) -> None:
        self.cwd = cwd
        self.display = "local"

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_stdout_line: LineCallback | None = None,
        idle_timeout: float | None = None,
    ) -> RunResult:
        full_env = dict(os.environ)
        full_env.update(env or {})
        try:
            proc = subprocess.Popen(
                list(argv), cwd=self.cwd, env=full_env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise TransportError(f"local: cannot run {argv[0]}: {exc}") from None
        stderr_chunks: list[bytes] = []
        # Drain stderr on a thread so a chatty program cannot block on a full pipe.
        assert proc.stderr is not None and proc.stdout is not None and proc.stdin is not None
        stderr_reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
        stderr_reader.start()
        writer = threading.Thread(target=_feed, args=(proc.stdin, stdin or b""), daemon=True)
        writer.start()
        out_lines: list[str] = []
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        watchdog = Watchdog(idle_timeout, lambda: stop_process(proc)) if idle_timeout else None
        try:
            with watchdog or contextlib.nullcontext():
                for raw in proc.stdout:
                    if watchdog:
                        watchdog.touch()
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    out_lines.append(line)
                    if on_stdout_line:
                        on_stdout_line(line)
                proc.wait()
        finally:
            if timer:
                timer.cancel()
        stderr_reader.join()
        writer.join()
        if watchdog and watchdog.expired:
            raise inactivity_error(self.display, argv[0], watchdog.limit)
        if timer and proc.returncode == -9:
            raise TransportError(f"local: {argv[0]} timed out after {timeout}s")
        return RunResult(proc.returncode, "\n".join(out_lines), b"".join(stderr_chunks).decode("utf-8", "replace"))

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)  # a kernel-side copy (sendfile) on Linux, streamed elsewhere
        if mode is not None:
            os.chmod(remote, mode)

    def get(self, remote: str, local: Path) -> None:
        try:
            shutil.copyfile(remote, local)
        except FileNotFoundError:
            raise TransportError(f"local: {remote} does not exist") from None


def _feed(pipe: object, data: bytes) -> None:
    try:
        pipe.write(data)  # type: ignore[attr-defined]
        pipe.close()  # type: ignore[attr-defined]
    except BrokenPipeError:
        pass
