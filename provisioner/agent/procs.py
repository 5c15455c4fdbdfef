"""Running programs on the host: always an argv list, never a shell string."""

from __future__ import annotations

import os

from .protocol import ResourceFailure, emit, log

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Sequence

OUTPUT_TAIL_LINES = 30
#: How long a stopped step's processes get to exit after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 3.0
_temp_dir: List[str] = []


def use_temp_dir(path: str) -> None:
    """TMPDIR for every program run from now on (an apply's own folder: see leftovers)."""
    _temp_dir[:] = [path]


def temp_dir() -> Optional[str]:
    """The folder set by use_temp_dir, None for the system's."""
    return _temp_dir[0] if _temp_dir else None


class Completed:
    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self) -> str:
        return "\n".join(self.output.splitlines()[-OUTPUT_TAIL_LINES:])


def run(
    argv: Sequence[str],
    cwd: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    timeout: Optional[float] = None,
    stream: bool = False,
    on_line: Optional[Callable[[str], None]] = None,
) -> Completed:
    """Run `argv`, capturing stdout+stderr; with `stream`, forward each line as a log event; `on_line` sees
    each line as it comes (an exception it raises stops the program and its children)."""
    import subprocess

    full_env = dict(os.environ)
    if _temp_dir:
        full_env["TMPDIR"] = _temp_dir[0]
    full_env.update(env or {})
    full_env.setdefault("GIT_TERMINAL_PROMPT", "0")
    try:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # in the agent's process group: a signal to the run's group (Ctrl-C, kill -9 -PGID) reaches it
    except FileNotFoundError:
        if cwd and not os.path.isdir(cwd):
            return Completed(argv, 127, "working directory %s does not exist" % cwd)
        return Completed(argv, 127, "%s: command not found" % argv[0])
    except PermissionError as exc:
        return Completed(argv, 126, "%s: %s" % (argv[0], exc))
    lines: List[str] = []
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if stream:
                log(line)
            if on_line is not None:
                on_line(line)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ResourceFailure("%s timed out after %ss" % (argv[0], timeout)) from None
    except BaseException:  # the agent is stopping (heartbeat.py): so does the step it was running
        _stop_tree(proc)
        raise
    return Completed(argv, proc.returncode, "\n".join(lines))


def _stop_tree(proc: Any) -> None:
    """SIGTERM the step and every process it started, then SIGKILL what is left after a short grace.

    The tree is found through /proc rather than a process group of its own, so that a signal to the whole
    run's group still reaches the step."""
    import contextlib
    import signal
    import subprocess

    tree: List[int] = []  # kept from the first look: a child whose parent died is no longer below the step
    for signum in (signal.SIGTERM, signal.SIGKILL):
        tree.extend(pid for pid in [proc.pid, *descendants(proc.pid)] if pid not in tree)
        for pid in tree:
            with contextlib.suppress(OSError):  # it ended already
                os.kill(pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_SECONDS)


def descendants(pid: int) -> List[int]:
    """The live descendants of `pid` (children first), from /proc; empty where there is no /proc."""
    children: Dict[int, List[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="utf-8") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
        children.setdefault(parent, []).append(int(entry))
    found: List[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        if child not in found:
            found.append(child)
            todo.extend(children.get(child, []))
    return found


def check(argv: Sequence[str], what: str, **kwargs) -> Completed:  # type: ignore[no-untyped-def]
    """Run and raise a ResourceFailure naming `what` and the output tail when it fails.

    `what` is also announced as a progress step, so the controller can show what a long apply is doing."""
    emit("progress", phase="step", message=what)
    done = run(argv, **kwargs)
    if not done.ok:
        raise ResourceFailure("%s failed (exit %d):\n%s" % (what, done.returncode, done.tail()))
    return done
