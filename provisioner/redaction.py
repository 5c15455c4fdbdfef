"""Every secret value this controller process has read, so that any text it prints can be masked.

Reports are masked with their session's secrets; an error can be raised before a report exists (a failed
download, an agent error, a rollback refused), so the CLI's error printer masks with what is remembered here.
"""

from __future__ import annotations

MASK = "***"
#: Shorter values would mask ordinary words (the reports' masker uses the same floor).
MIN_LENGTH = 4

_values: set[str] = set()


def remember(value: str) -> None:
    if len(value) >= MIN_LENGTH:
        _values.add(value)


def redact(text: str) -> str:
    for value in sorted(_values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
