"""A KEY=value environment file, fully managed; secret values never leave the host in reports.

Secrets: a key whose optional secret is unset on the controller (`unset_secrets`) keeps whatever value
the host has, and is neither changed nor shown. A key that was a secret in an earlier generation and is
gone from the manifest is removed, shown as `(secret) → removed`, never with its value.
"""

from __future__ import annotations

import os

from .. import masking
from ..fsutil import apply_meta, atomic_write, hard_linked, meta_changes, observe_meta
from ..protocol import Change, Context, ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List

MASK = "***"
SECRET = "(secret)"
REMOVED = "removed"


def _desired(spec: Dict[str, Any], observed: Dict[str, Any]) -> Dict[str, str]:
    values = dict(spec.get("values") or {})
    values.update(spec.get("secret_values") or {})
    have = observed.get("values") or {}
    for key in spec.get("unset_secrets") or []:
        if key in have and key not in values:
            values[key] = have[key]  # an optional secret the controller does not have: left as it is
    return values


def _former_secrets(spec: Dict[str, Any], ctx: Context) -> List[str]:
    """Keys that earlier generations recorded as secrets of an env file at this path."""
    from .. import state

    keys: List[str] = []
    state_dir = ctx.state_dir()
    for number in state.list_generations(state_dir)[-20:]:
        for resource in (state.read(state_dir, number) or {}).get("resources") or []:
            if not isinstance(resource, dict) or not isinstance(resource.get("spec"), dict):
                continue
            if resource.get("kind") == "envfile" and resource["spec"].get("path") == spec["path"]:
                keys.extend(str(k) for k in resource["spec"].get("secret_values") or {})
    return keys


def _parse(text: str) -> Dict[str, str]:
    values: Dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = stripped.partition("=")
        values[key.strip()] = value
    return values


def render(values: Dict[str, str]) -> str:
    lines = ["# Managed by provision; local edits are reported as drift and overwritten."]
    lines += ["%s=%s" % (key, values[key]) for key in sorted(values)]
    return "\n".join(lines) + "\n"


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.path(spec["path"])
    if not os.path.isfile(path):
        return {"exists": os.path.lexists(path), "is_file": False}
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    values = _parse(text)
    former = _former_secrets(spec, ctx)
    # Secret values only the host has (an unset optional secret, a removed one): masked like the others.
    masking.remember(values[key] for key in [*(spec.get("unset_secrets") or []), *former] if key in values)
    observed: Dict[str, Any] = {"exists": True, "is_file": True, "values": values, "text": text,
                                "hard_linked": hard_linked(path), "former_secrets": former}
    observed.update(observe_meta(path))
    return observed


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    secrets = set(spec.get("secret_values") or {}) | set(spec.get("unset_secrets") or [])
    want = _desired(spec, observed)
    if not observed.get("is_file"):
        if observed.get("exists"):
            return [Change("type", "not a regular file", "env file", "%s is not a regular file" % spec["path"])]
        return [Change("keys", None, sorted(want), "env file does not exist", "create")]
    if observed.get("hard_linked"):
        # Its inode may be a file outside the root: its values are not shown, the file is replaced.
        replaced = Change("file", "hard-linked", "private file",
                          "%s has other hard links; it is replaced by a private file" % spec["path"])
        return [replaced, *meta_changes(spec, observed)]
    have = observed["values"]
    former = set(observed.get("former_secrets") or [])
    changes: List[Change] = []
    for key in sorted(set(want) | set(have)):
        shown_old = MASK if (key in secrets or key in former) and key in have else have.get(key)
        shown_new = MASK if key in secrets and key in want else want.get(key)
        if key not in have:
            changes.append(Change("env." + key, None, shown_new, "%s is not set" % key, "create"))
        elif key not in want and key in former:
            changes.append(Change("env." + key, SECRET, REMOVED, "secret %s is not in the manifest" % key, "delete"))
        elif key not in want:
            changes.append(Change("env." + key, shown_old, None, "%s is not in the manifest" % key, "delete"))
        elif have[key] != want[key]:
            reason = "secret %s differs" % key if key in secrets else "%s differs" % key
            changes.append(Change("env." + key, shown_old, shown_new, reason))
    if not changes and observed["text"] != render(want):
        changes.append(Change("layout", None, None, "file layout differs (comments, order or duplicates)"))
    return changes + meta_changes(spec, observed)


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    path = ctx.path(spec["path"])
    values = _desired(spec, observed)
    for key, value in values.items():
        if "\n" in value or "\r" in value:
            raise ResourceFailure("value of %s contains a line break; env files hold one line per key" % key)
    mode = int(spec["mode"], 8) if spec.get("mode") else 0o600
    atomic_write(path, render(values).encode("utf-8"), mode)
    apply_meta(path, spec)

