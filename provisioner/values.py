"""Constrained string types for manifest values that reach the host (paths, refs, names, URLs).

Values travel to the host as JSON and are passed to programs as argv items, never through a
shell; these checks still refuse the values that can only be a mistake or an attack, so the
error surfaces at validation time with the field's location instead of on the host.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

SHELL_METACHARACTERS = set(";|&$`<>\\\"'*?!{}()\n\r\t\0")


def _no_metacharacters(value: str, what: str) -> None:
    bad = sorted({ch for ch in value if ch in SHELL_METACHARACTERS})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        raise ValueError(f"{what} must not contain shell metacharacters ({shown}); got {value!r}")


#: Control characters (tab aside) and the Unicode line separators: each ends a line for systemd, for
#: Python's splitlines() (which reads env files back) or for a terminal.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _no_control_characters(value: str, what: str) -> None:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"{what} must be one line without control characters; it contains {found.group()!r} "
                         f"at position {found.start()}")


def check_single_line(value: str) -> str:
    """Free text that lands in a line-based file (a systemd unit's Description=)."""
    _no_control_characters(value, "text written into a unit file (a line break would add lines such as "
                                  "[Service] to it)")
    return value


def check_env_value(value: str) -> str:
    """A value written as KEY=value into an env file that systemd and the process manager both read."""
    _no_control_characters(value, "an environment value")
    if value.endswith("\\"):
        raise ValueError("an environment value must not end with a backslash: systemd would join the next "
                         "line of the env file onto it")
    return value


def check_relative_path(value: str) -> str:
    """A path relative to the host's target root that cannot escape it."""
    if not value:
        raise ValueError("path must not be empty")
    _no_metacharacters(value, "path")
    _no_control_characters(value, "path")
    if value.startswith("/") or value.startswith("~"):
        raise ValueError(
            f"path {value!r} must be relative to the target root (drop the leading '/' or '~'); "
            "set target.root to move the root itself"
        )
    if ".." in value.split("/"):
        raise ValueError(f"path {value!r} must not contain '..' segments: paths stay inside the target root")
    return value


def check_owned_path(value: str) -> str:
    """A path a resource owns under the root: never the root itself, which a venv rebuild would wipe and a
    forced git checkout would clean."""
    check_relative_path(value)
    if posixpath.normpath(value) == ".":
        raise ValueError(f"path {value!r} is the target root itself; a resource needs a folder or file of its "
                         "own under the root, such as 'venv' or 'ComfyUI'")
    return value


def check_model_path(value: str) -> str:
    """A model file or folder: under the root (relative), or an absolute path, which expansion accepts only
    inside one of `target.extra_roots`."""
    if value.startswith("/"):
        check_absolute_path(value)
        return posixpath.normpath(value)
    return check_owned_path(value)


def check_model_folder(value: str) -> str:
    """comfyui.models_root: a folder under the root, or an absolute one (inside an extra root)."""
    if value.startswith("/"):
        check_absolute_path(value)
        return posixpath.normpath(value)
    return check_relative_path(value)


def inside_extra_root(path: str, extra_roots: list[str]) -> str | None:
    """The extra root that holds the absolute `path` (the root itself included), or None."""
    normal = posixpath.normpath(path)
    for root in extra_roots:
        if normal == root or normal.startswith(root.rstrip("/") + "/"):
            return root
    return None


def check_extra_root(value: str) -> str:
    """An extra root: an absolute folder on the host other than '/' (which would confine nothing)."""
    check_absolute_path(value)
    normal = posixpath.normpath(value)
    if not value.startswith("/") or normal == "/":
        raise ValueError(f"extra root {value!r} must be an absolute folder other than '/', such as /mnt/models")
    return normal


def check_absolute_path(value: str) -> str:
    """An absolute path on the host (target root, interpreter), without '..' segments."""
    _no_metacharacters(value, "path")
    _no_control_characters(value, "path")
    if ".." in value.split("/"):
        raise ValueError(f"path {value!r} must not contain '..' segments")
    return value


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"name {value!r} may use only letters, digits, '.', '_' and '-', and must start with a letter or digit"
        )
    return value


_GIT_REF_FORBIDDEN = re.compile(r"(\.\.|@\{|//|^/|/$|\.lock$|^-|[\x00-\x20~^:?*\[\\])")


def check_git_ref(value: str) -> str:
    _no_metacharacters(value, "git ref")
    if not value or _GIT_REF_FORBIDDEN.search(value):
        raise ValueError(f"{value!r} is not a valid git ref (a tag, branch or commit such as 'v1.0.2')")
    return value


_REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(\[[A-Za-z0-9._,-]+\])?"
    r"(==(?P<version>[A-Za-z0-9.+!_-]+?(\.\*)?))?$"
)


def check_pinned_requirement(value: str) -> str:
    """`name==version` (exact pin), optionally with extras; the version may carry a local label.

    Two looser forms exist for what cannot be known in advance, e.g. a torch release the catalog does not
    list: `name==X.Y.*` (a release series) and a bare `name` (any version, installed in the same pip run
    as the pins beside it, so pip matches it to them).
    """
    match = _REQUIREMENT.match(value.strip())
    if not match:
        raise ValueError(
            f"{value!r} is not an exact pin: write it as 'name==version' (for example 'tqdm==4.66.4'), "
            "'name==X.Y.*' for a release series, or a bare 'name' for any version"
        )
    return value.strip()


def check_url(value: str) -> str:
    _no_metacharacters(value, "URL")
    if " " in value:
        raise ValueError(f"URL {value!r} must not contain spaces")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https", "file", "ssh", "git"} and not re.match(r"^[\w.-]+@[\w.-]+:", value):
        raise ValueError(f"{value!r} is not a URL with a scheme such as https:// or file://")
    return value


def check_env_key(value: str) -> str:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
        raise ValueError(f"{value!r} is not a valid environment variable name (letters, digits, '_')")
    return value


RelativePath = Annotated[str, AfterValidator(check_relative_path)]
OwnedPath = Annotated[str, AfterValidator(check_owned_path)]
SingleLine = Annotated[str, AfterValidator(check_single_line)]
EnvValue = Annotated[str, AfterValidator(check_env_value)]
AbsolutePath = Annotated[str, AfterValidator(check_absolute_path)]
ModelPath = Annotated[str, AfterValidator(check_model_path)]
ExtraRoot = Annotated[str, AfterValidator(check_extra_root)]
Name = Annotated[str, AfterValidator(check_name)]
GitRef = Annotated[str, AfterValidator(check_git_ref)]
PinnedRequirement = Annotated[str, AfterValidator(check_pinned_requirement)]
Url = Annotated[str, AfterValidator(check_url)]
EnvKey = Annotated[str, AfterValidator(check_env_key)]
