"""One run in the ledger from its first moment: a `running` row before the host is touched, its outcome
at the end however it ends (a result, an error, Ctrl-C, SIGTERM). A SIGKILL leaves the `running` row,
which `history` shows as `interrupted` once the controller process is gone."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from provisioner.controller_process import ControllerProcess
from provisioner.errors import ProvisionError
from provisioner.ledger import INTERRUPTED, Ledger, LedgerEntry, new_run_id

EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 1, 2


class LedgerRun:
    """Use as `with LedgerRun(...) as run:` and call `run.finish(...)` with the result; an exception
    leaving the block without a finish records it as failed or interrupted, then goes on."""

    def __init__(self, ledger: Ledger, command: str, manifest: str, host: str,
                 mask: Callable[[str], str] = str) -> None:
        self.ledger = ledger
        self.command = command
        self.manifest = manifest
        self.host = host
        self.mask = mask
        self.started = time.time()
        self.run_id = new_run_id()
        self.row: int | None = None

    def __enter__(self) -> LedgerRun:
        self.row = self.ledger.start(self._entry("running", -1), ControllerProcess.current())
        return self

    def finish(self, exit_code: int, *, manifest: str | None = None, host: str | None = None, changed: int = 0,
               generation: int | None = None, summary: dict[str, Any] | None = None) -> None:
        status = {EXIT_OK: "ok", EXIT_DRIFT: "drift"}.get(exit_code, "failed")
        self.manifest, self.host = manifest or self.manifest, host or self.host
        self._write(self._entry(status, exit_code, changed, generation, summary))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.row is None or exc is None:
            return
        if isinstance(exc, KeyboardInterrupt):
            how = str(exc) or "Ctrl-C"  # SIGTERM's handler names its signal
            self._write(self._entry(INTERRUPTED, EXIT_ERROR, summary={"error": f"interrupted by {how}"}))
        elif not isinstance(exc, SystemExit):
            reason = str(exc) if isinstance(exc, ProvisionError) else f"internal error: {exc!r}"
            self._write(self._entry("failed", EXIT_ERROR, summary={"error": self.mask(reason)}))

    def _write(self, entry: LedgerEntry) -> None:
        if self.row is not None:
            self.ledger.finish(self.row, entry)
            self.row = None  # recorded once: a later exception does not overwrite the outcome

    def _entry(self, status: str, exit_code: int, changed: int = 0, generation: int | None = None,
               summary: dict[str, Any] | None = None) -> LedgerEntry:
        return LedgerEntry(self.run_id, self.started, round(time.time() - self.started, 3), self.command,
                           self.manifest, self.host, status, exit_code, changed, generation, summary)


def interrupt_on_sigterm() -> None:
    """Let SIGTERM end a run as Ctrl-C does: cleanup runs and the ledger records it as interrupted."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
