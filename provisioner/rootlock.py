"""Controller side of the host's root lock: how long to wait for it, and who we are when we hold it."""

from __future__ import annotations

import getpass
import os
import re
import socket
from typing import Any

import click

#: Like Terraform's -lock-timeout=0s: a locked root is refused at once, naming the holder, rather than
#: leaving a CI job waiting silently behind another operator's run. Waiting is asked for explicitly.
DEFAULT_LOCK_TIMEOUT = 0.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'0', '30', '30s', '5m', '1h' -> seconds; ValueError with the accepted forms otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use seconds (30) or a unit: 500ms, 30s, 5m, 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


lock_timeout_option = click.option(
    "--lock-timeout", type=DurationType(), default=str(DEFAULT_LOCK_TIMEOUT), show_default="0s: refuse at once",
    help="How long to wait for another run's lock on the target root (e.g. 30s, 10m) before giving up "
    "with exit 1.")


def controller_identity() -> dict[str, Any]:
    """What the lock holder records about the controller that started it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"host": socket.gethostname(), "user": user, "pid": os.getpid()}


def lock_request(timeout: float) -> dict[str, Any]:
    """The `lock` field of an apply/rollback request."""
    return {"timeout": timeout, "controller": controller_identity()}
