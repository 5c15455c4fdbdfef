"""Just enough of PEP 440/508 to tell whether an installed version satisfies a requirements line.

Release numbers are compared numerically; pre/post/dev/local parts are ignored. Lines this cannot
judge (URLs, environment markers) count as satisfied when the package is installed at all.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_CLAUSE = re.compile(r"^(===|==|!=|~=|>=|<=|>|<)\s*([^\s,]+)$")


def parse_line(line: str) -> Optional[Tuple[str, List[Tuple[str, str]], bool]]:
    """(name, [(op, version)], judgeable) for a requirements.txt line, or None for blanks/options."""
    line = line.split(" #", 1)[0].strip()
    if not line or line.startswith(("#", "-")):
        return None
    if "://" in line or line.startswith((".", "/")):
        return None
    judgeable = ";" not in line
    line = line.split(";", 1)[0].strip()
    match = _NAME.match(line)
    if not match:
        return None
    clauses: List[Tuple[str, str]] = []
    rest = match.group(3).strip()
    if rest:
        for part in rest.split(","):
            clause = _CLAUSE.match(part.strip())
            if not clause:
                return match.group(1), [], False
            clauses.append((clause.group(1), clause.group(2)))
    return match.group(1), clauses, judgeable


def _release(version: str) -> Tuple[int, ...]:
    match = re.match(r"^v?(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def _cmp(a: Tuple[int, ...], b: Tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def satisfies(version: str, clauses: List[Tuple[str, str]]) -> bool:
    have = _release(version)
    for op, want_text in clauses:
        if want_text.endswith(".*"):
            prefix = _release(want_text[:-2])
            matches = have[: len(prefix)] == prefix
            if (op == "==" and not matches) or (op == "!=" and matches):
                return False
            continue
        want = _release(want_text)
        order = _cmp(have, want)
        ok = {
            "==": order == 0, "===": version == want_text, "!=": order != 0, ">=": order >= 0,
            "<=": order <= 0, ">": order > 0, "<": order < 0,
            "~=": order >= 0 and have[: max(len(want) - 1, 1)] == want[: max(len(want) - 1, 1)],
        }[op]
        if not ok:
            return False
    return True
