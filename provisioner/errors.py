"""Errors a user can cause: each names where the problem is and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


class ProvisionError(Exception):
    """An error the CLI prints without a traceback (exit 1)."""


@dataclass(frozen=True)
class Issue:
    """One problem found in an input file, with its location."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ManifestError(ProvisionError):
    """A manifest (or a file it includes) is invalid; carries every issue found."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        count = len(issues)
        header = f"{count} problem{'s' if count != 1 else ''} in manifest:"
        super().__init__("\n".join([header, *(f"  {issue}" for issue in issues)]))


class RoleError(ProvisionError):
    """A role is missing, malformed, or renders to invalid resources."""


class TemplateError(ProvisionError):
    """A template is missing or fails to render."""


class TransportError(ProvisionError):
    """The host could not be reached or a command could not be run on it."""


class AgentError(ProvisionError):
    """The host agent reported a failure it could not recover from."""


class ApplyError(ProvisionError):
    """An apply failed on the host; the message says which resource and why."""
