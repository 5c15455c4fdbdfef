"""Errors a user can cause with lock files and mirror files."""

from __future__ import annotations

from provisioner.errors import Issue, ProvisionError


class LockError(ProvisionError):
    """A lock could not be made or read; the message names the source and the fix."""


class StaleLockError(LockError):
    """The manifest no longer resolves to what its lock pins, so apply refuses to guess which one is meant."""


class MirrorsError(ProvisionError):
    """A mirrors file is invalid; carries every issue found, each with file:line."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        count = len(issues)
        header = f"{count} problem{'s' if count != 1 else ''} in mirrors file:"
        super().__init__("\n".join([header, *(f"  {issue}" for issue in issues)]))


class LockFileError(ProvisionError):
    """A lock file does not parse or does not match the lock format; names file:line."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        lines = [f"  {issue}" for issue in issues]
        fix = "  fix it, or rewrite it with `provision lock --update`"
        super().__init__("\n".join(["the lock file is invalid:", *lines, fix]))
