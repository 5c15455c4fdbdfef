"""The transport contract: a dumb pipe with three verbs (run an argv, put a file, get a file)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from provisioner.transport.inactivity import DEFAULT_INACTIVITY_TIMEOUT_S

LineCallback = Callable[[str], None]


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Transport(ABC):
    """Runs programs and moves files on one host. Everything above it is transport-agnostic."""

    #: Human name of the host, used in every message about it.
    display: str
    #: target.inactivity_timeout: agent calls fail when the host sends nothing for this long.
    inactivity_timeout: float = DEFAULT_INACTIVITY_TIMEOUT_S

    @abstractmethod
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
        """Run `argv` (never through a shell built from values); stream stdout lines when asked.

        `timeout` caps the whole call; `idle_timeout`, for programs that promise to write regularly (the
        agent's heartbeats), fails the call as soon as stdout has been silent that long."""

    @abstractmethod
    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        """Copy a local file to the host, streamed: it may be a model of many gigabytes, never held in memory."""

    @abstractmethod
    def get(self, remote: str, local: Path) -> None:
        """Copy a file from the host."""

    def finalize(self, succeeded: bool) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called once after an apply (e.g. a docker-image:// target commits its image on success)."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the connection; idempotent."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
