"""A plain-text table that never cuts a value: it fits the terminal by wrapping at spaces, else widens.

A driver version or a host name cut to fit (`550.54.1…`) reads as a different value, so a cell is only
ever broken between words, and a line grows past the terminal rather than lose a character.
"""

from __future__ import annotations

import io
import shutil

from rich.console import Console
from rich.table import Column, Table

GAP = 2


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


def column_widths(headers: list[str], rows: list[list[str]], width: int) -> list[int]:
    """Natural widths, then the columns with spaces in their values give way down to their longest word."""
    table = [headers, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    floors = [max(_longest_word(row[i]) for row in table) for i in range(len(headers))]
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    # The widest wrappable column gives way first, a character at a time, never below its longest word.
    while excess > 0:
        slack = [(widths[i] - floors[i], i) for i in range(len(widths)) if widths[i] > floors[i]]
        if not slack:
            break
        _, widest = max((widths[i], i) for _, i in slack)
        widths[widest] -= 1
        excess -= 1
    return widths


def render_table(headers: list[str], rows: list[list[str]], width: int | None = None) -> str:
    width = width or shutil.get_terminal_size(fallback=(100, 24)).columns
    widths = column_widths(headers, rows, width)
    columns = [Column(header, width=w, overflow="fold", header_style="")
               for header, w in zip(headers, widths, strict=True)]
    table = Table(*columns, box=None, padding=(0, GAP, 0, 0), pad_edge=False, show_edge=False, collapse_padding=True)
    for row in rows:
        table.add_row(*row)
    rule = "  ".join("-" * w for w in widths)
    out = io.StringIO()
    # Wide enough for the columns as chosen: rich must not shrink them again.
    Console(file=out, width=sum(widths) + GAP * len(widths), color_system=None, highlight=False).print(table)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    return "\n".join([lines[0], rule, *lines[1:]])
