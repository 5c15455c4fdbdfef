"""The `provision` executable: the command line, with Python's cycle collector set for a short-lived process.

A run builds a large heap while it starts (the imported modules, the manifest schema, the SSH stack) and
makes little cyclic garbage after that. Left on, the collector rescans that growing heap many times during
start-up and once more at exit: about 100 ms of a 0.4 s no-op apply. So it is off for the run, and the
exit skips the final full collection (the memory goes back to the OS either way). Commands that run long
and do make garbage, such as fleet rollouts, switch it back on for what they allocate (`collect_from_here`).
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()
    from provisioner.cli import main as run_cli

    try:
        run_cli()
    finally:
        gc.freeze()


def collect_from_here() -> None:
    """Turn the collector back on for objects made from now on, leaving the start-up heap out of its scans.
    Does nothing where the collector was never switched off (a library caller, the tests)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
