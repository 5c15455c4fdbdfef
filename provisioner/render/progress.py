"""What an apply is doing, while it does it: the agent's progress events on stderr.

On a terminal: a live rich display, one line per resource being applied (a bar with bytes, rate and ETA
for downloads; a spinner with the current step for pip, git and the rest). Elsewhere: plain lines, one
per event worth seeing, download bytes at most every few seconds or 10%. Under --quiet: nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.text import Text

from provisioner.render.terminal import console_for, is_quiet
from provisioner.render.units import human_bytes, human_duration

Mask = Callable[[str], str]

#: Plain lines: a download's bytes are shown again after this many seconds or this share of the file.
PLAIN_EVERY_SECONDS = 5.0
PLAIN_EVERY_FRACTION = 0.10


class View(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def begin(self, resource: str) -> None: ...
    def step(self, resource: str, what: str) -> None: ...
    def transfer(self, resource: str, done: int, total: int | None) -> None: ...
    def end(self, resource: str, outcome: str, detail: str) -> None: ...
    def note(self, text: str) -> None: ...


class ApplyProgress:
    """Turns agent events into what the user sees; use as a context manager around the apply."""

    def __init__(self, mask: Mask, verbose: bool = False, enabled: bool = True, console: Console | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mask = mask
        self.verbose = verbose
        console = console or console_for()
        self.view: View | None = None
        if enabled and not is_quiet():
            self.view = LiveView(console) if console.is_interactive else PlainView(console, clock)
        # Under --json the progress is off (stdout is the report), but a run waiting for another's root
        # lock still says so on stderr: silence for up to --lock-timeout would look like a hang.
        self.waits: Console | None = console if not enabled and not is_quiet() else None
        self.current: str | None = None

    def __enter__(self) -> ApplyProgress:
        if self.view:
            self.view.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.view:
            self.view.stop()

    def on_event(self, event: dict[str, Any]) -> None:
        if self.view is None:
            if self.waits is not None and event.get("event") == "progress" and event.get("phase") == "waiting":
                self.waits.file.write(self.mask(f"… {event.get('message', '')}") + "\n")
                self.waits.file.flush()
            return
        name, phase = event.get("event"), event.get("phase")
        resource = str(event.get("id") or self.current or "")
        if name == "log":
            if self.verbose:
                # Steps run at once: each line names the resource it comes from.
                source = f"{event['id']}: " if event.get("id") else ""
                self.view.note(self.mask(f"    | {source}{event.get('message', '')}"))
        elif name != "progress":
            return
        elif phase == "applying":
            if self.current and self.current != resource and self.current.startswith("handler:"):
                self.view.end(self.current, "done", "")  # a handler has no end event of its own
            self.current = resource
            self.view.begin(self.mask(resource))
        elif phase in ("step", "building"):  # a source build reports its compile steps as it goes
            self.view.step(self.mask(resource), self.mask(str(event.get("message", ""))))
        elif phase == "bytes":
            total = event.get("total")
            self.view.transfer(self.mask(resource), int(event.get("done") or 0), int(total) if total else None)
        elif phase in ("changed", "failed", "skipped"):
            detail = {"changed": f"{float(event.get('seconds') or 0):.2f}s",
                      "failed": str(event.get("error") or "").split("\n", 1)[0],
                      "skipped": f"needs {event.get('after')}"}[phase]
            self.view.end(self.mask(resource), phase, self.mask(detail))
            if self.current == resource:
                self.current = None
        elif phase in ("caching", "pushed", "waiting"):
            mark = "⇡" if phase != "waiting" else "…"
            self.view.note(self.mask(f"  {mark} {event.get('message', '')}"))


MARKS = {"changed": ("✓", "green"), "done": ("✓", "green"), "failed": ("x", "red"), "skipped": ("-", "yellow")}


class _DownloadOnly(ProgressColumn):
    """A column shown only for downloads (other steps have no bytes to count)."""

    def __init__(self, inner: ProgressColumn) -> None:
        super().__init__()
        self.inner = inner

    def render(self, task: Task) -> Any:
        return self.inner.render(task) if task.fields.get("download") else Text("")


class _TransferColumn(ProgressColumn):
    """bytes done / total, rate and ETA, from rich's own speed samples."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("download"):
            return Text("")
        total = f"/{human_bytes(int(task.total))}" if task.total else ""
        parts = [human_bytes(int(task.completed)) + total]
        speed = task.finished_speed or task.speed
        if speed:
            parts.append(f"{human_bytes(int(speed))}/s")
        remaining = task.time_remaining
        if remaining is not None and not task.finished:
            parts.append(f"ETA {human_duration(remaining)}")
        return Text("  ".join(parts), style="cyan")


class LiveView:
    """A rich Progress on stderr: one live line per resource in progress, a finished line above it."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 _DownloadOnly(BarColumn(bar_width=30)), _TransferColumn(),
                                 console=console, transient=True)
        self.tasks: dict[str, TaskID] = {}

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        for resource in list(self.tasks):
            self.end(resource, "done", "")
        self.progress.stop()

    def begin(self, resource: str) -> None:
        if resource not in self.tasks:
            self.tasks[resource] = self.progress.add_task(resource, total=None,
                                                          download=resource.startswith("download:"))
            self.progress.refresh()

    def step(self, resource: str, what: str) -> None:
        self.begin(resource)
        self.progress.update(self.tasks[resource], description=f"{resource}: {what}", refresh=True)

    def transfer(self, resource: str, done: int, total: int | None) -> None:
        self.begin(resource)
        # Drawn now rather than at the next tick: the agent sends a count every few seconds, and the last
        # one just before the resource ends.
        self.progress.update(self.tasks[resource], completed=done, total=total, download=True, refresh=True)

    def end(self, resource: str, outcome: str, detail: str) -> None:
        task = self.tasks.pop(resource, None)
        if task is not None:
            shown = next(t for t in self.progress.tasks if t.id == task)
            if shown.fields.get("download") and shown.completed:
                detail = ", ".join([human_bytes(int(shown.completed)), *([detail] if detail else [])])
            self.progress.remove_task(task)
        mark, color = MARKS.get(outcome, ("·", "white"))
        line = Text.assemble((f"  {mark} ", color), resource, (f"  {detail}" if detail else "", "dim"))
        self.progress.console.print(line)

    def note(self, text: str) -> None:
        self.progress.console.print(Text(text))


@dataclass
class _Shown:
    """What a plain view last printed for one download."""

    started: float
    first_bytes: int
    at: float = 0.0
    fraction: float = -1.0
    finished: bool = False


class PlainView:
    """Plain lines for logs and pipes: no control codes, downloads rate-limited."""

    def __init__(self, console: Console, clock: Callable[[], float]) -> None:
        self.stream = console.file
        self.clock = clock
        self.downloads: dict[str, _Shown] = {}

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def begin(self, resource: str) -> None:
        self._line(f"  … {resource}")

    def step(self, resource: str, what: str) -> None:
        self._line(f"    {resource}: {what}")

    def transfer(self, resource: str, done: int, total: int | None) -> None:
        now = self.clock()
        shown = self.downloads.setdefault(resource, _Shown(started=now, first_bytes=done))
        fraction = done / total if total else 0.0
        finished = total is not None and done >= total
        due = (now - shown.at >= PLAIN_EVERY_SECONDS or fraction - shown.fraction >= PLAIN_EVERY_FRACTION
               or finished)
        if not due or shown.finished:
            return
        shown.at, shown.fraction, shown.finished = now, fraction, finished
        parts = [human_bytes(done) + (f" of {human_bytes(total)} ({fraction:.0%})" if total else "")]
        elapsed = now - shown.started
        if elapsed > 0 and done > shown.first_bytes:
            rate = (done - shown.first_bytes) / elapsed
            parts.append(f"{human_bytes(int(rate))}/s")
            if total and not finished and rate > 0:
                parts.append(f"ETA {human_duration((total - done) / rate)}")
        self._line(f"    {resource}: " + ", ".join(parts))

    def end(self, resource: str, outcome: str, detail: str) -> None:
        self.downloads.pop(resource, None)
        mark = MARKS.get(outcome, ("·", ""))[0]
        self._line(f"  {mark} {resource}" + (f"  {detail}" if detail else ""))

    def note(self, text: str) -> None:
        self._line(text)
