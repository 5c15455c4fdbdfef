"""Start a service process that runs its program only once the agent has recorded it.

The process manager records a service's PID so that the next run can find it. Between the start of a
process and the write of its record there is a moment in which a killed agent would leave a service
nobody knows of: the next run starts a second one beside it, which loses the port to the first. So the
new process first runs a few lines of Python that wait on a pipe, and exec the program (same PID) only
when the agent writes "go" after the record is on disk; when the agent dies first the pipe closes, and
the process exits without starting the program.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List

_HOLD = """\
import os, sys
if os.read(int(sys.argv[1]), 1) != b"1":
    os._exit(1)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write("cannot start %s: %s\\n" % (sys.argv[2], exc))
    os._exit(127)
"""


def start(argv: List[str], cwd: str, env: Dict[str, str], log: Any, recorded: Callable[[int], None]) -> Any:
    """Start `argv` in a session of its own, logging to `log`; `recorded(pid)` must write its record before
    the program runs. Returns the Popen of the process (the program, once it runs)."""
    _check_program(argv[0], env)
    hold, go = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HOLD, str(hold), *argv], cwd=cwd, env=env,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True, pass_fds=(hold,))
    except OSError as exc:
        os.close(go)
        raise ResourceFailure("cannot start %s: %s" % (argv[0], exc)) from None
    finally:
        os.close(hold)
    try:
        recorded(child.pid)
        os.write(go, b"1")
    finally:
        os.close(go)  # without "go" first, the process ends here
    return child


def _check_program(program: str, env: Dict[str, str]) -> None:
    """The errors exec would give, given here, before anything is started."""
    import shutil

    found = program if "/" in program else shutil.which(program, path=env.get("PATH"))
    if not found or not os.path.isfile(found):
        raise ResourceFailure("cannot start %s: no such program" % program)
    if not os.access(found, os.X_OK):
        raise ResourceFailure("cannot start %s: permission denied (not executable)" % program)
