"""The ComfyUI checkout and what its custom_nodes folder holds, for a ComfyUI-Manager snapshot.

Laid out as ComfyUI-Manager reads it (comfyui_manager/glob/manager_core.py, get_current_snapshot, in
comfyui-manager 4.3 on PyPI): each folder in custom_nodes/ is a node pack; one named `X.disabled`, or
inside `custom_nodes/.disabled/`, is disabled; a `*.py` (or `*.py.disabled`) file is a single-file node.
Only git's own answers are reported (HEAD, origin), never guessed from the folder name.
"""

from __future__ import annotations

import os
import re

from . import procs

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


def _git(path: str, *args: str) -> Optional[str]:
    # safe.directory: the checkout may belong to another user than the one running the agent.
    done = procs.run(["git", "-c", "safe.directory=" + path, "-C", path, *args], timeout=60)
    out = done.output.strip()
    return out if done.ok and out else None


def _checkout(path: str) -> Dict[str, Any]:
    if not os.path.isdir(os.path.join(path, ".git")):
        return {"head": None, "origin": None}
    # ComfyUI-Manager takes the first remote in .git/config: origin in any checkout git clone made.
    origin = _git(path, "remote", "get-url", "origin")
    if origin is None:
        remotes = (_git(path, "remote") or "").split()
        origin = _git(path, "remote", "get-url", remotes[0]) if remotes else None
    return {"head": _git(path, "rev-parse", "--verify", "-q", "HEAD^{commit}"), "origin": origin}


_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_STRING = re.compile(r"""^\s*(?P<key>name|version)\s*=\s*(?P<quote>["'])(?P<value>[^"']*)(?P=quote)\s*(#.*)?$""")


def _registry_install(path: str) -> Optional[Dict[str, str]]:
    """{id, version} of a node pack installed from the registry: ComfyUI-Manager's cnr_utils.read_cnr_info
    takes a folder with .tracking and a pyproject.toml, the id from [project] name (lower-cased)."""
    if not os.path.isfile(os.path.join(path, ".tracking")):
        return None
    found: Dict[str, str] = {}
    section = None
    try:
        with open(os.path.join(path, "pyproject.toml"), encoding="utf-8") as handle:
            for line in handle:
                header = _SECTION.match(line)
                if header:
                    section = header.group("name").strip()
                    continue
                pair = _STRING.match(line) if section == "project" else None
                if pair:
                    found.setdefault(pair.group("key"), pair.group("value").strip())
    except (OSError, UnicodeDecodeError):
        return None
    if not found.get("name") or not found.get("version"):
        return None
    return {"id": found["name"].lower(), "version": found["version"]}


def _entries(custom_nodes: str) -> List[Dict[str, Any]]:
    found: List[Dict[str, Any]] = []
    places = [(custom_nodes, False), (os.path.join(custom_nodes, ".disabled"), True)]
    for folder, in_disabled in places:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if name in (".disabled", "__pycache__"):
                continue
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                disabled = in_disabled or name.endswith(".disabled")
                entry = {"name": name, "kind": "dir", "disabled": disabled}
                entry.update(_checkout(path))
                registry = None if entry["head"] else _registry_install(path)
                if entry["head"]:
                    entry["kind"] = "git"
                elif registry:
                    entry.update(kind="cnr", cnr_id=registry["id"], version=registry["version"])
                found.append(entry)
            elif name.endswith(".py") or name.endswith(".py.disabled"):
                found.append({"name": name, "kind": "file", "disabled": in_disabled or name.endswith(".disabled"),
                              "head": None, "origin": None})
    return found


def gather(comfy_dir: str) -> Optional[Dict[str, Any]]:
    """None when there is no ComfyUI folder at all."""
    if not os.path.isdir(comfy_dir):
        return None
    result = {"path": comfy_dir, "custom_nodes": _entries(os.path.join(comfy_dir, "custom_nodes"))}
    result.update(_checkout(comfy_dir))
    return result
