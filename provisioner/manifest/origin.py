"""Which manifest field fed a value that a role or the expansion refuses, so the error points at the manifest.

Roles render their resources from the manifest (`{{ python_packages }}`, `{{ env }}`, `{{ models_dir }}`);
when a rendered value is invalid, the fix belongs in the manifest field it came from, not in the role.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from provisioner.errors import Issue
from provisioner.manifest.loader import LoadedManifest, shorten
from provisioner.manifest.source import PathKey, format_path

#: Of the fields whose value is part of the refused one, the longest is taken (a one-character venv too).
_MIN_FRAGMENT = 1


def _walk(node: Any, prefix: PathKey) -> Iterator[tuple[PathKey, Any]]:
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*prefix, index))


def _candidates(loaded: LoadedManifest) -> Iterator[tuple[PathKey, Any]]:
    """The manifest's values as written, `vars` first (what roles read most), only those with a position."""
    manifest = loaded.manifest
    yield from _walk(manifest.vars, ("vars",))
    dumped = manifest.model_dump(mode="json", exclude={"vars", "resources", "handlers", "roles", "role_paths"},
                                 exclude_defaults=True)
    yield from _walk(dumped, ())


def feeding_field(loaded: LoadedManifest, value: Any) -> PathKey | None:
    """The located manifest field whose value is `value`, or, for a string, is part of it."""
    exact: PathKey | None = None
    partial: PathKey | None = None
    partial_length = 0
    for path, candidate in _candidates(loaded):
        if not path or path not in loaded.source.positions:
            continue
        if candidate == value and type(candidate) is type(value):
            exact = exact or path
        elif (isinstance(value, str) and isinstance(candidate, str) and len(candidate) >= _MIN_FRAGMENT
              and candidate in value and (partial is None or len(candidate) > partial_length)):
            partial, partial_length = path, len(candidate)
    return exact or partial


def feeding_field_of_any(loaded: LoadedManifest, value: Any) -> PathKey | None:
    """feeding_field of `value`, else of the first item inside it that has one (a refused argv list)."""
    for _, part in _walk(value, ()):
        path = feeding_field(loaded, part)
        if path is not None:
            return path
    return None


def issue_at_feeding_field(loaded: LoadedManifest, value: Any, message: str, reaches: str) -> Issue | None:
    """An issue at the manifest field that fed `value`, saying where the value went; None if none did."""
    path = feeding_field_of_any(loaded, value)
    if path is None:
        return None
    file, line, column = loaded.source.locate(path)
    return Issue(file, line, column, format_path(path), f"{shorten(message, 400)} (this value reaches {reaches})")
