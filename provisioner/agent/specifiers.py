"""PEP 440 versions and specifiers, enough of PEP 508 to read a requirements.txt line.

Installed versions are judged as pip judges them: `==2.10.0` accepts `2.10.0+cu130` (a pin without a
local label matches any label), `==2.10.0+cpu` only that label; `1.3.0dev20260213` is
`1.3.0.dev20260213`; pre-releases and dev releases order before their release, and an installed
pre-release is accepted where its number fits (pip's `prereleases=True` for what is installed).
Lines this cannot judge (URLs, environment markers) count as satisfied when the package is installed.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_CLAUSE = re.compile(r"^(===|==|!=|~=|>=|<=|>|<)\s*([^\s,]+)$")

# The grammar of PEP 440's appendix (the same expression `packaging` uses).
_VERSION = re.compile(
    r"""^\s*v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?P<pre>[-_.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_.]?(?P<pre_n>[0-9]+)?)?
    (?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?))?
    (?P<dev>[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_PRE_LETTER = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "c": "rc", "pre": "rc", "preview": "rc", "rc": "rc"}
_PRE_RANK = {"a": 0, "b": 1, "rc": 2}


class Version:
    """A parsed PEP 440 version; compares by the spec's ordering, prints in normal form."""

    def __init__(self, text: str) -> None:
        match = _VERSION.match(text)
        if not match:
            raise ValueError("not a PEP 440 version: %r" % text)
        self.text = text
        self.epoch = int(match.group("epoch") or 0)
        self.release = tuple(int(part) for part in match.group("release").split("."))
        self.pre = None  # type: Optional[Tuple[str, int]]
        if match.group("pre"):
            self.pre = (_PRE_LETTER[match.group("pre_l").lower()], int(match.group("pre_n") or 0))
        self.post = None  # type: Optional[int]
        if match.group("post"):
            self.post = int(match.group("post_n1") or match.group("post_n2") or 0)
        self.dev = int(match.group("dev_n") or 0) if match.group("dev") else None  # type: Optional[int]
        local = match.group("local")
        self.local = tuple(re.split(r"[-_.]", local.lower())) if local else ()  # type: Tuple[str, ...]

    @property
    def public(self) -> Version:
        """The version without its local label."""
        return Version(str(self).partition("+")[0])

    @property
    def base(self) -> Tuple[int, Tuple[int, ...]]:
        """Epoch and release, trailing zeros dropped: what `2.10` and `2.10.0rc1` share."""
        return self.epoch, _trimmed(self.release)

    @property
    def is_prerelease(self) -> bool:
        return self.pre is not None or self.dev is not None

    def key(self) -> tuple:  # type: ignore[type-arg]
        # A bare dev release (1.0.dev1) sorts before 1.0a1; no pre-release sorts after every one of them.
        if self.pre is None and self.post is None and self.dev is not None:
            pre = (-1, 0)
        elif self.pre is None:
            pre = (3, 0)
        else:
            pre = (_PRE_RANK[self.pre[0]], self.pre[1])
        post = -1 if self.post is None else self.post
        dev = (1, 0) if self.dev is None else (0, self.dev)
        # Numeric local parts sort after alphanumeric ones; no local label sorts first.
        local = tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in self.local)
        return self.epoch, _trimmed(self.release), pre, post, dev, local

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key() == other.key()

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __le__(self, other: Version) -> bool:
        return self.key() <= other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __str__(self) -> str:
        out = ("%d!" % self.epoch if self.epoch else "") + ".".join(str(p) for p in self.release)
        if self.pre is not None:
            out += "%s%d" % self.pre
        if self.post is not None:
            out += ".post%d" % self.post
        if self.dev is not None:
            out += ".dev%d" % self.dev
        if self.local:
            out += "+" + ".".join(self.local)
        return out

    def __repr__(self) -> str:
        return "Version(%r)" % str(self)


def _trimmed(release: Tuple[int, ...]) -> Tuple[int, ...]:
    end = len(release)
    while end > 1 and release[end - 1] == 0:
        end -= 1
    return release[:end]


def parse(text: str) -> Optional[Version]:
    """The version, or None when `text` is not PEP 440 (a legacy version string)."""
    try:
        return Version(text)
    except ValueError:
        return None


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


def _prefix_match(have: Version, prefix_text: str) -> bool:
    """`==X.*`: the release starts with X (zero-padded), local label ignored."""
    prefix = parse(prefix_text)
    if prefix is None:
        return False
    # PEP 440 allows only a release in a prefix (==1.0rc1.* is invalid), so the rest of `have` is free.
    width = len(prefix.release)
    release = (have.release + (0,) * width)[:width]
    return (have.epoch, release) == (prefix.epoch, prefix.release)


def matches(version: str, op: str, want: str) -> bool:
    """Whether an installed `version` satisfies one clause `op want`."""
    if op == "===":
        return version.strip().lower() == want.strip().lower()
    have = parse(version)
    if have is None:
        # Not PEP 440: only the literal spelling can be judged.
        return op == "==" and version.strip().lower() == want.strip().lower()
    if want.endswith(".*") and op in ("==", "!="):
        return _prefix_match(have, want[:-2]) == (op == "==")
    spec = parse(want)
    if spec is None:
        return False
    if op in ("==", "!="):
        # A pin without a local label accepts any label; one with a label only that label.
        equal = (have if spec.local else have.public) == spec
        return equal == (op == "==")
    public = have.public
    if op == "~=":
        if len(spec.release) < 2:
            return False
        stem = ("%d!" % spec.epoch if spec.epoch else "") + ".".join(str(p) for p in spec.release[:-1])
        return spec <= public and _prefix_match(public, stem)
    if op == ">=":
        return spec <= public
    if op == "<=":
        return public <= spec
    if op == "<":
        # <2.0 excludes 2.0rc1 (a pre-release of the bound) unless the bound is itself a pre-release.
        if not spec.is_prerelease and public.is_prerelease and (public.base, public.post) == (spec.base, spec.post):
            return False
        return public < spec
    if op == ">":
        # >2.0 excludes 2.0.post1 (a post-release of the bound, unless it is one itself) and 2.0+local.
        if spec.post is None and spec.dev is None and public.post is not None and (
                public.base, public.pre) == (spec.base, spec.pre):
            return False
        if have.local and public == spec:
            return False
        return spec < public
    return False


def satisfies(version: str, clauses: List[Tuple[str, str]]) -> bool:
    return all(matches(version, op, want) for op, want in clauses)


def same_pin(have: str, want: str) -> bool:
    """`name==want` accepts the installed `have` (PEP 440 equality, local label rule included)."""
    return matches(have, "==", want)
