"""What ComfyUI's startup log says about the nodes that failed to load, and whose they are.

Formats, from ComfyUI 0.3.64's nodes.py (`load_custom_node`, `init_external_custom_nodes`,
`init_extra_nodes`) and ComfyUI-nunchaku v1.2.1's __init__.py. ComfyUI imports its own comfy_extras
(and comfy_api_nodes) through the same `load_custom_node` as plugins, so "Cannot import ... module for
custom nodes" is ComfyUI's own failure when the path lies under comfy_extras/ or comfy_api_nodes/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "   0.1 seconds (IMPORT FAILED): /root/ComfyUI/custom_nodes/ComfyUI-nunchaku"
IMPORT_FAILED = re.compile(r"^\s*[0-9.]+ seconds \(IMPORT FAILED\): (.+?)\s*$")
# "Cannot import /root/ComfyUI/custom_nodes/X module for custom nodes: No module named 'nunchaku'"
CANNOT_IMPORT = re.compile(r"Cannot import (.+?) module for custom nodes:\s*(.*)$")
# The summary init_extra_nodes prints after the custom nodes: a header, then "IMPORT FAILED: nodes_x.py".
BUILTIN_HEADER = re.compile(r"WARNING: some (comfy_extras|comfy_api_nodes)/ nodes did not import correctly")
BUILTIN_FAILED = re.compile(r"^IMPORT FAILED: (\S+\.py)\s*$")
BUILTIN_DIRS = ("comfy_extras", "comfy_api_nodes")
# ComfyUI-nunchaku imports each node on its own and logs "Node `X` import failed:" (or "Nodes `A`,`B` and `C`");
# where its own logging.basicConfig wins, the line carries an "asctime - ERROR - " prefix.
NODE_FAILED = re.compile(r"(?:^|\s-\s)Nodes? ((?:`[^`]+`[, ]*(?:and )?)+) import failed:")
# "ComfyUI-nunchaku 1.2.1 requires nunchaku >= v1.0.0, but found nunchaku 0.16.1. Please update nunchaku."
VERSION_MISMATCH = re.compile(r"requires nunchaku [^,]+, but found nunchaku [0-9][0-9A-Za-z.+]*[0-9A-Za-z]")
# Printed once every custom node was imported, and once the HTTP server is about to listen.
CUSTOM_NODES_DONE = ("Import times for custom nodes:", "Starting server", "To see the GUI go to:")


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    path: str
    error: str | None


@dataclass(frozen=True)
class BuiltinFailure:
    """A module of ComfyUI itself (comfy_extras/nodes_x.py) that did not import."""

    folder: str
    file: str
    error: str | None


def _lines(log: str) -> list[str]:
    return [ANSI.sub("", line.rstrip("\r")) for line in log.splitlines()]


def _parts(path: str) -> list[str]:
    return [p for p in re.split(r"[\\/]", path.rstrip("/\\")) if p]


def _plugin_name(path: str) -> str:
    return _parts(path)[-1]


def _builtin_folder(path: str) -> str | None:
    parts = _parts(path)
    return parts[-2] if len(parts) >= 2 and parts[-2] in BUILTIN_DIRS else None


def _error_after(lines: list[str], start: int) -> str | None:
    """The exception line that ends the traceback starting after lines[start]."""
    for line in lines[start + 1:start + 200]:
        if not line.strip() or line.startswith((" ", "\t")) or line.startswith("Traceback"):
            continue
        return line.strip()
    return None


def _cannot_import(lines: list[str]) -> dict[str, tuple[str, str]]:
    """path -> (name, message) of every "Cannot import" line."""
    found: dict[str, tuple[str, str]] = {}
    for line in lines:
        match = CANNOT_IMPORT.search(line)
        if match:
            found[match.group(1)] = (_plugin_name(match.group(1)), match.group(2).strip())
    return found


def plugin_failures(log: str) -> list[PluginFailure]:
    """Custom-node packages ComfyUI could not import, with the exception message where the log has it.
    ComfyUI's own comfy_extras / comfy_api_nodes modules are not plugins: see builtin_failures."""
    lines = _lines(log)
    messages = {name: message for path, (name, message) in _cannot_import(lines).items()
                if _builtin_folder(path) is None}
    failures: list[PluginFailure] = []
    seen: set[str] = set()
    for line in lines:
        match = IMPORT_FAILED.match(line)
        if match and _builtin_folder(match.group(1)) is None:
            name = _plugin_name(match.group(1))
            if name not in seen:
                seen.add(name)
                failures.append(PluginFailure(name, match.group(1), messages.get(name)))
    for name, message in messages.items():  # a log cut before the summary still names the plugin
        if name not in seen:
            failures.append(PluginFailure(name, name, message))
    return failures


def builtin_failures(log: str) -> list[BuiltinFailure]:
    """ComfyUI's own node modules that did not import (its "WARNING: some comfy_extras/ nodes" summary)."""
    lines = _lines(log)
    errors = {(folder, name): message for path, (name, message) in _cannot_import(lines).items()
              for folder in [_builtin_folder(path)] if folder}
    found: dict[tuple[str, str], str | None] = dict(errors)
    folder: str | None = None
    for line in lines:
        header = BUILTIN_HEADER.search(line)
        if header:
            folder = header.group(1)
            continue
        match = BUILTIN_FAILED.match(line.strip())
        if match and folder:
            found.setdefault((folder, match.group(1)), None)
    return [BuiltinFailure(folder, file, error) for (folder, file), error in found.items()]


def node_failures(log: str) -> dict[str, str | None]:
    """Node classes a plugin reported as failed to import -> the exception that caused it."""
    lines = _lines(log)
    failed: dict[str, str | None] = {}
    for index, line in enumerate(lines):
        match = NODE_FAILED.search(line.strip())
        if match:
            error = _error_after(lines, index)
            for name in re.findall(r"`([^`]+)`", match.group(1)):
                failed[name] = error
    return failed


def version_complaints(log: str) -> list[str]:
    return [m.group(0) for line in _lines(log) for m in [VERSION_MISMATCH.search(line)] if m]


def custom_nodes_loaded(log: str) -> bool:
    """Whether ComfyUI got as far as importing its custom nodes (and printed their summary)."""
    return any(marker in line for line in _lines(log) for marker in CUSTOM_NODES_DONE)


def loading_custom_nodes(log: str) -> bool:
    """Whether the log shows a custom node being imported (so a death there is the plugin's doing)."""
    return any("/custom_nodes/" in line.replace("\\", "/") or "ComfyUI-nunchaku Initialization" in line
               for line in _lines(log))
