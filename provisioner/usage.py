"""Usage errors exit 1: exit 2 means drift (plan) or a failed check, and CI scripts branch on it.

click exits 2 on a usage error (an unknown option, a missing argument, a bad value). The root group sets
the exit code of every usage error raised while parsing its own arguments or while running a command,
which covers every subcommand (fleet's included), since they are all parsed and run inside its `invoke`.
"""

from __future__ import annotations

from typing import Any

import click

EXIT_USAGE = 1


class UsageErrorsExit1(click.Group):
    """A click group whose usage errors, and those of every command under it, exit 1."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            _exit_1(exc)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _exit_1(exc)
            raise


def _exit_1(exc: click.UsageError) -> None:
    # click reads `exit_code` from the instance; setting it there keeps the error's own way of showing
    # itself (a bare `provision` still prints the help).
    exc.exit_code = EXIT_USAGE  # type: ignore[misc]
