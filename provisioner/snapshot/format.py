"""The ComfyUI-Manager snapshot format, read and written as ComfyUI-Manager does.

Source: comfyui-manager 4.3 on PyPI, comfyui_manager/glob/manager_core.py (get_current_snapshot,
save_snapshot_with_postfix, restore_snapshot), common/manager_util.py (get_installed_pip_packages,
restore_pip_snapshot) and common/git_helper.py (apply_snapshot). A snapshot is a mapping of

- `comfyui`: ComfyUI's HEAD commit (40 hex digits), or null for a custom-nodes-only snapshot;
- `git_custom_nodes`: {remote URL: {hash: commit, disabled: bool}} for every git checkout that is not a
  registry (CNR) install; the URL is the checkout's first remote, as written in its .git/config;
- `cnr_custom_nodes`: {registry id: version} for node packs installed from registry.comfy.org
  (a folder with .tracking and a pyproject.toml; disabled ones are not recorded);
- `file_custom_nodes`: [{filename, disabled}] for single .py files in custom_nodes/;
- `pips`: `pip freeze` as {line: ""}, except that a `name @ url` line becomes {name: url};
  null in a custom-nodes-only snapshot.

The file's extension picks the format: `.json` is the mapping itself (json.dump, indent 4), `.yaml` holds
it under a top-level `custom_nodes` key (yaml.dump). apply_snapshot reads `comfyui`, `git_custom_nodes`
and `file_custom_nodes` without defaults, so a snapshot written for restore carries all five keys.
Restore skips `torch==`, `torchvision==`, `torchaudio==` and `nvidia-*` pips itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import Issue, ManifestError, ProvisionError
from provisioner.input_file import InputFileError, read_input_text
from provisioner.manifest.source import PathKey, SourceMap, format_path, load_yaml_text
from provisioner.values import check_url

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: Snapshot keys this format knows; anything else is reported, never silently taken for a typo'd key.
_KEYS = ("comfyui", "git_custom_nodes", "cnr_custom_nodes", "file_custom_nodes", "pips")


class SnapshotError(ProvisionError):
    """A snapshot file cannot be read as a ComfyUI-Manager snapshot; every issue names file and field."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        count = len(issues)
        header = f"{count} problem{'s' if count != 1 else ''} in ComfyUI-Manager snapshot:"
        super().__init__("\n".join([header, *(f"  {issue}" for issue in issues)]))


@dataclass(frozen=True)
class GitNode:
    url: str
    commit: str
    disabled: bool = False


@dataclass(frozen=True)
class FileNode:
    filename: str
    disabled: bool = False


@dataclass
class Snapshot:
    comfyui: str | None = None
    git_nodes: list[GitNode] = field(default_factory=list)
    cnr_nodes: dict[str, str] = field(default_factory=dict)
    file_nodes: list[FileNode] = field(default_factory=list)
    #: pip freeze lines -> "" or, for `name @ url`, name -> url (ComfyUI-Manager's own shape).
    pips: dict[str, str] | None = None

    def as_data(self) -> dict[str, Any]:
        """The mapping ComfyUI-Manager writes and restores (all five keys, as apply_snapshot needs)."""
        return {
            "comfyui": self.comfyui,
            "git_custom_nodes": {n.url: {"hash": n.commit, "disabled": n.disabled} for n in self.git_nodes},
            "cnr_custom_nodes": dict(self.cnr_nodes),
            "file_custom_nodes": [{"filename": f.filename, "disabled": f.disabled} for f in self.file_nodes],
            "pips": None if self.pips is None else dict(self.pips),
        }


def check_snapshot_path(path: Path) -> None:
    """ComfyUI-Manager picks the format by extension and restores nothing else."""
    if path.suffix not in (".json", ".yaml"):
        raise SnapshotError([Issue(str(path), None, None, "", "ComfyUI-Manager restores only .json and .yaml "
                                   "snapshots; name the file SNAPSHOT.json or SNAPSHOT.yaml")])


def dump_snapshot(snapshot: Snapshot, path: Path) -> str:
    """The text ComfyUI-Manager would write to `path`: JSON for .json, YAML under `custom_nodes` for .yaml."""
    check_snapshot_path(path)
    if path.suffix == ".json":
        return json.dumps(snapshot.as_data(), indent=4) + "\n"
    return str(yaml.safe_dump({"custom_nodes": snapshot.as_data()}, allow_unicode=True))


def load_snapshot(path: Path) -> Snapshot:
    """Read a snapshot through the bounded input loader; malformed content is a SnapshotError."""
    display = str(path)
    try:
        text = read_input_text(path)
    except InputFileError as exc:
        raise SnapshotError([exc.issue]) from None
    data, source = _parse(text, display, as_json=_is_json(path, text))
    wrapped = isinstance(data, dict) and "custom_nodes" in data and "git_custom_nodes" not in data
    prefix: PathKey = ("custom_nodes",) if wrapped else ()
    return _Reader(source, prefix).snapshot(data["custom_nodes"] if wrapped else data)


def _is_json(path: Path, text: str) -> bool:
    if path.suffix.lower() in (".yaml", ".yml"):
        return False
    return path.suffix.lower() == ".json" or text.lstrip().startswith("{")


def _parse(text: str, display: str, as_json: bool) -> tuple[Any, SourceMap]:
    if as_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SnapshotError([Issue(display, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")]) from None
        except RecursionError:
            issue = Issue(display, None, None, "", "the JSON nests too deeply to be a snapshot")
            raise SnapshotError([issue]) from None
        try:  # JSON is YAML: its positions locate field errors; where YAML reads it otherwise, only fields are named
            located = load_yaml_text(text, display)
        except ManifestError:
            return data, SourceMap(display)
        return data, located.source if located.data == data else SourceMap(display)
    try:
        loaded = load_yaml_text(text, display)
    except ManifestError as exc:
        raise SnapshotError(exc.issues) from None
    return loaded.data, loaded.source


class _Reader:
    def __init__(self, source: SourceMap, prefix: PathKey) -> None:
        self.source = source
        self.prefix = prefix
        self.issues: list[Issue] = []

    def _issue(self, path: PathKey, message: str) -> None:
        full = (*self.prefix, *path)
        issue = self.source.issue(full, message)
        self.issues.append(Issue(issue.file, issue.line, issue.column, format_path(full), message))

    def snapshot(self, data: Any) -> Snapshot:
        if not isinstance(data, dict):
            self._issue((), "a ComfyUI-Manager snapshot is a mapping with git_custom_nodes, cnr_custom_nodes, "
                        "file_custom_nodes, pips and comfyui (a .yaml snapshot holds it under custom_nodes)")
            raise SnapshotError(self.issues)
        for key in data:
            if key not in _KEYS:
                self._issue((key,), f"unknown snapshot key {key!r}; ComfyUI-Manager writes {', '.join(_KEYS)}")
        if not any(key in data for key in _KEYS):
            self._issue((), "no snapshot keys found: is this a ComfyUI-Manager snapshot?")
        snapshot = Snapshot(
            comfyui=self._commit(data.get("comfyui"), ("comfyui",), nullable=True),
            git_nodes=self._git_nodes(data.get("git_custom_nodes")),
            cnr_nodes=self._cnr_nodes(data.get("cnr_custom_nodes")),
            file_nodes=self._file_nodes(data.get("file_custom_nodes")),
            pips=self._pips(data.get("pips")),
        )
        if self.issues:
            raise SnapshotError(self.issues)
        return snapshot

    def _commit(self, value: Any, path: PathKey, nullable: bool = False) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not _COMMIT.match(value.strip()):
            self._issue(path, f"{value!r} is not a git commit; ComfyUI-Manager records the full 40-digit hash")
            return None
        return value.strip()

    def _git_nodes(self, value: Any) -> list[GitNode]:
        if value is None:
            return []
        if not isinstance(value, dict):
            self._issue(("git_custom_nodes",), "must be a mapping of repository URL to {hash, disabled}")
            return []
        nodes = []
        for url, entry in value.items():
            path: PathKey = ("git_custom_nodes", url)
            if not isinstance(entry, dict) or "hash" not in entry:
                self._issue(path, "must be a mapping with hash (the commit) and disabled (true or false)")
                continue
            disabled = entry.get("disabled", False)
            if not isinstance(disabled, bool):
                self._issue((*path, "disabled"), f"{disabled!r} must be true or false")
                continue
            commit = self._commit(entry["hash"], (*path, "hash"))
            try:
                check_url(url)
            except ValueError as exc:
                self._issue(path, f"{exc}; a git custom node is keyed by the URL it was cloned from")
                continue
            if commit:
                nodes.append(GitNode(url, commit, disabled))
        return nodes

    def _cnr_nodes(self, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._issue(("cnr_custom_nodes",),
                        "must be a mapping of registry id to version, such as comfyui-kjnodes: 1.1.0")
            return {}
        nodes = {}
        for node_id, version in value.items():
            if not isinstance(version, str | int | float) or isinstance(version, bool):
                self._issue(("cnr_custom_nodes", node_id), f"{version!r} is not a version such as 1.1.0")
                continue
            nodes[node_id] = str(version)
        return nodes

    def _file_nodes(self, value: Any) -> list[FileNode]:
        if value is None:
            return []
        if not isinstance(value, list):
            self._issue(("file_custom_nodes",), "must be a list of {filename, disabled}")
            return []
        nodes = []
        for index, entry in enumerate(value):
            if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
                self._issue(("file_custom_nodes", index), "must be a mapping with filename (a .py file) and disabled")
                continue
            nodes.append(FileNode(entry["filename"], bool(entry.get("disabled", False))))
        return nodes

    def _pips(self, value: Any) -> dict[str, str] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            self._issue(("pips",), "must be a mapping of `pip freeze` lines to \"\" (or of a package name to its URL)")
            return None
        pips = {}
        for line, url in value.items():
            if url is None:
                url = ""
            if not isinstance(url, str):
                self._issue(("pips", line), f"{url!r} must be \"\" or the URL the package was installed from")
                continue
            pips[str(line)] = url
        return pips
