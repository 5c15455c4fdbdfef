"""What ComfyUI's startup log says about custom nodes that failed to load."""

from __future__ import annotations

import re
from dataclasses import dataclass

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "   0.1 seconds (IMPORT FAILED): /root/ComfyUI/custom_nodes/ComfyUI-nunchaku"
IMPORT_FAILED = re.compile(r"^\s*[0-9.]+ seconds \(IMPORT FAILED\): (.+?)\s*$")
# "Cannot import /root/ComfyUI/custom_nodes/X module for custom nodes: No module named 'nunchaku'"
CANNOT_IMPORT = re.compile(r"Cannot import (.+?) module for custom nodes:\s*(.*)$")
# ComfyUI-nunchaku imports each node on its own and logs "Node `X` import failed:" (or "Nodes `A`,`B` and `C`").
NODE_FAILED = re.compile(r"^Nodes? ((?:`[^`]+`[, ]*(?:and )?)+) import failed:")
# "ComfyUI-nunchaku 1.2.1 requires nunchaku >= v1.0.0, but found nunchaku 0.16.1. Please update nunchaku."
VERSION_MISMATCH = re.compile(r"requires nunchaku [^,]+, but found nunchaku [0-9][0-9A-Za-z.+]*[0-9A-Za-z]")


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    path: str
    error: str | None


def _lines(log: str) -> list[str]:
    return [ANSI.sub("", line.rstrip("\r")) for line in log.splitlines()]


def _plugin_name(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]


def _error_after(lines: list[str], start: int) -> str | None:
    """The exception line that ends the traceback starting after lines[start]."""
    for line in lines[start + 1:start + 200]:
        if not line.strip() or line.startswith((" ", "\t")) or line.startswith("Traceback"):
            continue
        return line.strip()
    return None


def plugin_failures(log: str) -> list[PluginFailure]:
    """Custom-node packages ComfyUI could not import, with the exception message where the log has it."""
    lines = _lines(log)
    messages: dict[str, str] = {}
    for line in lines:
        match = CANNOT_IMPORT.search(line)
        if match:
            messages[_plugin_name(match.group(1))] = match.group(2).strip()
    failures: list[PluginFailure] = []
    seen: set[str] = set()
    for line in lines:
        match = IMPORT_FAILED.match(line)
        if match:
            name = _plugin_name(match.group(1))
            if name not in seen:
                seen.add(name)
                failures.append(PluginFailure(name, match.group(1), messages.get(name)))
    for name, message in messages.items():  # a log cut before the summary still names the plugin
        if name not in seen:
            failures.append(PluginFailure(name, name, message))
    return failures


def node_failures(log: str) -> dict[str, str | None]:
    """Node classes a plugin reported as failed to import -> the exception that caused it."""
    lines = _lines(log)
    failed: dict[str, str | None] = {}
    for index, line in enumerate(lines):
        match = NODE_FAILED.match(line.strip())
        if match:
            error = _error_after(lines, index)
            for name in re.findall(r"`([^`]+)`", match.group(1)):
                failed[name] = error
    return failed


def version_complaints(log: str) -> list[str]:
    return [m.group(0) for line in _lines(log) for m in [VERSION_MISMATCH.search(line)] if m]
