"""The local machine, through subprocess."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from provisioner.errors import TransportError
from provisioner.transport.base import LineCallback, RunResult, Transport
from provisioner.transport.inactivity import inactivity_error
from provisioner.transport.stream import stream


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
        done = stream(argv, stdin or b"", {**os.environ, **(env or {})}, cwd=self.cwd, timeout=timeout,
                      on_line=on_stdout_line, idle_timeout=idle_timeout)
        if done.stopped == "idle":
            raise inactivity_error(self.display, argv[0], idle_timeout or 0)
        if done.stopped == "timeout":
            raise TransportError(f"local: {argv[0]} timed out after {timeout}s")
        return RunResult(done.returncode, done.stdout, done.stderr)

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

