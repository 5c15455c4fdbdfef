"""YAML loading that remembers where every value came from and refuses duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import Issue, ManifestError

PathKey = tuple[str | int, ...]


Location = tuple[str, int, int]


@dataclass
class SourceMap:
    """File, line and column (1-based) of every mapping key and sequence item, by field path.

    After `extends` merging one map covers several files, so each position names its file.
    """

    file: str
    positions: dict[PathKey, Location] = field(default_factory=dict)

    def locate(self, path: PathKey) -> tuple[str, int | None, int | None]:
        """Position of `path`, or of its nearest located ancestor."""
        probe = tuple(path)
        while True:
            if probe in self.positions:
                return self.positions[probe]
            if not probe:
                return self.file, None, None
            probe = probe[:-1]

    def issue(self, path: PathKey, message: str) -> Issue:
        file, line, column = self.locate(path)
        return Issue(file, line, column, format_path(path), message)


def format_path(path: PathKey) -> str:
    """`models[2].file` style rendering of a field path."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class LoadedYaml:
    data: Any
    source: SourceMap


def load_yaml_file(path: Path) -> LoadedYaml:
    """Parse one YAML file; syntax errors and duplicate keys become ManifestError."""
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError([Issue(display, None, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Issue(display, None, None, "", f"cannot read file: {exc}")]) from None
    return load_yaml_text(text, display)


def load_yaml_text(text: str, display: str) -> LoadedYaml:
    source = SourceMap(display)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = exc.problem or str(exc)
        raise ManifestError([Issue(display, line, column, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Issue(display, None, None, "", f"invalid YAML: {exc}")]) from None
    if node is None:
        return LoadedYaml({}, source)
    issues: list[Issue] = []
    data = _convert(node, (), source, issues)
    if issues:
        raise ManifestError(issues)
    return LoadedYaml(data, source)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _location(source: SourceMap, node: yaml.Node) -> Location:
    return (source.file, *_mark(node))


_scalar_loader = yaml.SafeLoader("")


def _convert(node: yaml.Node, path: PathKey, source: SourceMap, issues: list[Issue]) -> Any:
    source.positions.setdefault(path, _location(source, node))
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                issues.append(Issue(source.file, *_mark(key_node), "", "YAML merge keys (<<) are not supported"))
                continue
            key = _scalar_loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in result:
                _, first_line, _ = source.positions[child]
                issues.append(
                    Issue(source.file, *_mark(key_node), format_path(child),
                          f"duplicate key '{key}' (first defined on line {first_line}); keep only one")
                )
                continue
            source.positions[child] = _location(source, key_node)
            result[key] = _convert(value_node, child, source, issues)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, index), source, issues) for index, item in enumerate(node.value)]
    return _scalar_loader.construct_object(node)
