"""How output looks on this terminal: colour and live display by rich's conventions, and `--quiet`.

rich decides from the stream and the environment: a TTY gets colour and live progress; a pipe or a
file gets plain text; NO_COLOR drops colour (even on a TTY), FORCE_COLOR forces it, TERM=dumb is never
live. Text rendered with click styles goes through `echo`, which follows the same decision.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any, TypeVar

import click
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

_settings = {"quiet": False}


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    _settings["quiet"] = bool(value)


def quiet_option(func: F) -> F:
    """-q/--quiet: only errors and the final summary line (set for the whole command, not passed to it)."""
    option = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_set_quiet,
                          help="Print nothing but errors and the final summary line.")
    return option(func)


def is_quiet() -> bool:
    return _settings["quiet"]


def console_for(stream: IO[str] | None = None) -> Console:
    """A rich console on `stream` (default stderr, where progress goes)."""
    return Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)


def color_enabled(stream: IO[str]) -> bool:
    console = console_for(stream)
    return console.color_system is not None and not console.no_color


def echo(text: str, err: bool = False) -> None:
    """Print click-styled text, keeping its colours only where rich would show colour."""
    stream = sys.stderr if err else sys.stdout
    click.echo(text, file=stream, color=color_enabled(stream))

