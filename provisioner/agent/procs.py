"""Running programs on the host: always an argv list, never a shell string."""

from __future__ import annotations

import os

from .protocol import ResourceFailure, log

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Sequence

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
) -> Completed:
    """Run `argv`, capturing stdout+stderr; with `stream`, forward each line as a log event."""
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
            # Its own process group, so that stopping the agent stops everything the step started.
            start_new_session=True,
        )
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
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ResourceFailure("%s timed out after %ss" % (argv[0], timeout)) from None
    except BaseException:  # the agent is stopping (heartbeat.py): so does the step it was running
        _stop_group(proc)
        raise
    return Completed(argv, proc.returncode, "\n".join(lines))


def _stop_group(proc: Any) -> None:
    """SIGTERM the step's process group, then SIGKILL whatever of it is left after a short grace."""
    import contextlib
    import signal
    import subprocess

    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(OSError):  # the group is gone already
            os.killpg(proc.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_SECONDS)


def check(argv: Sequence[str], what: str, **kwargs) -> Completed:  # type: ignore[no-untyped-def]
    """Run and raise a ResourceFailure naming `what` and the output tail when it fails."""
    done = run(argv, **kwargs)
    if not done.ok:
        raise ResourceFailure("%s failed (exit %d):\n%s" % (what, done.returncode, done.tail()))
    return done
