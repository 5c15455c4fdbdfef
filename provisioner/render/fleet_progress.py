"""A fleet rollout as it goes: each host's events, and how many hosts are done, failed and remaining.

On a terminal the counts stay in a live bar under the event lines; elsewhere a plain counts line follows
each host that finishes. Under --quiet nothing is shown (the summary table still is).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from provisioner.render.terminal import console_for, is_quiet

PHASE_COLORS = {"rollback": "magenta", "check": "cyan", "failed": "red", "error": "red", "waiting": "yellow"}


@dataclass
class HostCounts:
    total: int = 0
    done: int = 0
    failed: int = 0
    not_run: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done - self.failed - self.not_run)

    def count(self, done_message: str) -> None:
        """Count one finished host by the status its done line starts with."""
        status = done_message.split(",", 1)[0].split(":", 1)[0].strip()
        if status in ("ok", "skipped"):
            self.done += 1
        elif status in ("not-run", "not started"):
            self.not_run += 1
        else:
            self.failed += 1

    def line(self) -> str:
        text = f"hosts: {self.done} done, {self.failed} failed, {self.remaining} remaining"
        return text + (f", {self.not_run} not run" if self.not_run else "")


class FleetProgress:
    """The fleet runner's progress callback (host, phase, message); safe to call from many threads."""

    def __init__(self, enabled: bool = True, verbose: bool = False, console: Console | None = None) -> None:
        self.enabled = enabled and not is_quiet()
        self.verbose = verbose
        self.console = console or console_for()
        self.live = self.console.is_interactive
        self.width = 12
        self.counts = HostCounts()
        self.lock = threading.Lock()
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def start(self, hosts: list[str]) -> FleetProgress:
        self.counts.total = len(hosts)
        self.width = max([len(h) for h in hosts] + [4])
        if self.enabled and self.live:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                                     console=self.console, transient=True)
            self.task = self.progress.add_task(self.counts.line(), total=len(hosts) or None)
            self.progress.start()
        return self

    def __enter__(self) -> FleetProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __call__(self, host: str, phase: str, message: str) -> None:
        first = message.splitlines()[0] if message else ""
        with self.lock:
            if phase == "done" and host:
                self.counts.count(first)
            # Under --json only a host waiting for another run's root lock is shown (on stderr): silence
            # for up to --lock-timeout would look like a hang.
            shown = self.enabled or (phase == "waiting" and not is_quiet())
            if not shown or (phase == "log" and not self.verbose):
                return
            self._show(self._line(host, phase, first))
            if phase == "done" and host:
                self._counts_changed()

    def _line(self, host: str, phase: str, first: str) -> Text:
        if not host:
            return Text(f"== {first}", style="bold")
        color = PHASE_COLORS.get(phase)
        if phase == "done":
            color = "green" if first.startswith(("ok", "skipped")) else "red"
        return Text.assemble(f"  {host:<{self.width}} {phase:<9} ", (first, color or ""))

    def _show(self, line: Text) -> None:
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            self.console.file.write(line.plain + "\n")
            self.console.file.flush()

    def _counts_changed(self) -> None:
        if self.progress is not None and self.task is not None:
            finished = self.counts.total - self.counts.remaining
            self.progress.update(self.task, description=self.counts.line(), completed=finished)
        else:
            self._show(Text(f"  [{self.counts.line()}]"))
