"""Who goes first on the host's link: an install run fetching its packages, before the model downloads.

A cold apply's longest chain is venv -> install -> service: ComfyUI cannot start before torch and the
requirements are in, while a model file only has to be there when the apply ends. Shared evenly (each
TCP stream its share), the link slows that chain by the models' bytes. So while an install run fetches
packages, the agent's own downloads step aside: each reads one chunk a second, which keeps its connection
alive (a server may drop one that stops reading), and takes the whole link back the moment the fetch
ends. The installer's sockets are not ours to pace; the downloads are the side that can give way.

When an installer fetches is read from its output (`InstallerOutput`):
- uv: from its start until it has resolved and no announced download is in flight ("Downloading torch
  (858.0MiB)" ... " Downloaded torch"), and for good once it prints "Prepared N packages"; a build of an
  sdist ("Building insightface==0.7.3") is CPU work, during which the downloads take the link back;
- pip: from its start until "Building wheels for collected packages" or "Installing collected packages"
  (it downloads everything, one file after another, before either).

Downloads through huggingface_hub (hubfetch.py) run in a program of their own and do not step aside; they
happen only where the venv already has huggingface_hub, which a cold host's does not.
"""

from __future__ import annotations

import contextlib
import threading
import time

from . import procs
from .protocol import StepStopped

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Iterator, Set

#: How long a download that steps aside waits between two reads of one chunk (1 MiB: transfer.CHUNK).
STEP_ASIDE_SECONDS = 1.0
_POLL_SECONDS = 0.25
_state = threading.Condition()
_fetching: Set[int] = set()  # ids of the InstallerOutput objects whose installer fetches now


class InstallerOutput:
    """Follows one installer run's output lines and marks the run as fetching packages, or not."""

    def __init__(self, installer: str) -> None:
        self.uv = installer == "uv"
        self.resolved = False
        self.in_flight: Set[str] = set()
        self.finished = False
        self._set(True)

    def line(self, text: str) -> None:
        if self.finished:
            return
        if self.uv:
            if text.startswith("Prepared "):
                self.finished = True
            elif text.startswith("Resolved "):
                self.resolved = True
            elif text.startswith("Downloading "):
                self.in_flight.add(text[len("Downloading "):].split(" ", 1)[0])
            elif text.startswith(" Downloaded "):
                self.in_flight.discard(text[len(" Downloaded "):].strip())
            self._set(not self.finished and (not self.resolved or bool(self.in_flight)))
        elif text.startswith(("Building wheels for collected packages", "Installing collected packages")):
            self.finished = True
            self._set(False)

    def end(self) -> None:
        self.finished = True
        self._set(False)

    def _set(self, fetching: bool) -> None:
        with _state:
            if fetching:
                _fetching.add(id(self))
            else:
                _fetching.discard(id(self))
            _state.notify_all()


@contextlib.contextmanager
def installer_run(installer: str) -> Iterator[InstallerOutput]:
    """The installer run of the block fetches until its output says otherwise, and never after the block."""
    output = InstallerOutput(installer)
    try:
        yield output
    finally:
        output.end()


def installers_fetching() -> bool:
    with _state:
        return bool(_fetching)


def step_aside() -> bool:
    """Called by a download after each chunk: while an install run fetches, wait up to STEP_ASIDE_SECONDS
    (less when the fetch ends first). Whether it waited; StepStopped once the agent is stopping."""
    deadline = time.monotonic() + STEP_ASIDE_SECONDS
    waited = False
    with _state:
        while _fetching and not procs.stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waited = True
            _state.wait(min(left, _POLL_SECONDS))
    if procs.stopping():
        raise StepStopped()
    return waited
