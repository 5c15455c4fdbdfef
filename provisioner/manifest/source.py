"""YAML loading that remembers where every value came from and refuses duplicate keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import Issue, ManifestError
from provisioner.input_file import InputFileError, read_input_text

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
    """Parse one YAML file; an unreadable file, syntax errors and duplicate keys become ManifestError."""
    display = str(path)
    try:
        text = read_input_text(path)
    except InputFileError as exc:
        raise ManifestError([exc.issue]) from None
    return load_yaml_text(text, display)


def load_yaml_text(text: str, display: str) -> LoadedYaml:
    source = SourceMap(display)
    try:
        node = yaml.compose(text, Loader=_BoundedLoader)
    except _TooDeep as exc:
        line, column = (exc.mark.line + 1, exc.mark.column + 1) if exc.mark else (None, None)
        raise ManifestError([Issue(display, line, column, "",
                                   f"YAML nests deeper than {MAX_YAML_DEPTH} levels; flatten it")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        problem = exc.problem or str(exc)
        raise ManifestError([Issue(display, line, column, "", f"invalid YAML: {problem}")]) from None
    except yaml.reader.ReaderError as exc:
        line, column = _line_column(text, exc.position)
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        message = (f"invalid YAML: character {character!r} is not allowed in YAML; remove it "
                   "(write control characters as escapes in a double-quoted string)")
        raise ManifestError([Issue(display, line, column, "", message)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Issue(display, None, None, "", f"invalid YAML: {exc}")]) from None
    if node is None:
        source.positions[()] = (display, 1, 1)  # an empty document: what it lacks is reported at its start
        return LoadedYaml({}, source)
    issues: list[Issue] = []
    converter = _Converter(source, issues)
    try:
        _check_expansion(node, source)
        data = converter.convert(node, ())
    except _TooLarge as exc:
        raise ManifestError([exc.issue]) from None
    if issues:
        raise ManifestError(issues)
    return LoadedYaml(data, source)


#: Deeper than any real manifest, lock or inventory; bounds the recursion of the YAML composer and ours.
MAX_YAML_DEPTH = 64
#: Values after aliases are expanded: `*a` copies of copies grow exponentially ("billion laughs").
MAX_YAML_VALUES = 100_000


class _TooDeep(Exception):
    def __init__(self, mark: yaml.Mark | None) -> None:
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe composer, refusing nesting deeper than MAX_YAML_DEPTH before its recursion goes there."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH + 1:  # the document's root is depth 1, its keys' values 2, ...
                raise _TooDeep(self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _line_column(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _location(source: SourceMap, node: yaml.Node) -> Location:
    return (source.file, *_mark(node))


_TAG = "tag:yaml.org,2002:"
#: What a manifest's values are: JSON's types. A timestamp stays the text it was written as.
_SCALAR_TAGS = frozenset(f"{_TAG}{name}" for name in ("str", "int", "float", "bool", "null", "timestamp"))
_MAPPING_TAG, _SEQUENCE_TAG = f"{_TAG}map", f"{_TAG}seq"
_BAD_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


class _TooLarge(Exception):
    def __init__(self, issue: Issue) -> None:
        self.issue = issue


def _check_expansion(root: yaml.Node, source: SourceMap) -> None:
    """Refuse a node graph whose aliases expand past MAX_YAML_VALUES values, or that holds itself.

    Sizes are memoized per node, so this costs the size of the graph, not of its expansion.
    """
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise _TooLarge(Issue(source.file, *_mark(node), "",
                                  "an alias ('*') refers to the anchor ('&') it is inside of; write the value out"))
        visiting.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total = 1 + sum(size(child) for child in children)
        visiting.discard(key)
        if total > MAX_YAML_VALUES:
            raise _TooLarge(Issue(source.file, *_mark(node), "",
                                  f"the YAML expands to more than {MAX_YAML_VALUES} values through aliases ('*'); "
                                  "write the values out"))
        sizes[key] = total
        return total

    size(root)


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


class _Converter:
    """YAML nodes to plain data (dict, list, str, int, float, bool, None), recording each value's position."""

    def __init__(self, source: SourceMap, issues: list[Issue]) -> None:
        self.source = source
        self.issues = issues
        self.constructor = yaml.SafeLoader("")

    def _issue(self, node: yaml.Node, path: PathKey, message: str) -> None:
        self.issues.append(Issue(self.source.file, *_mark(node), format_path(path), message))

    def convert(self, node: yaml.Node, path: PathKey) -> Any:
        # The composer bounds the depth as written; an alias can still place a deep value deeper.
        if len(path) > MAX_YAML_DEPTH:
            raise _TooLarge(Issue(self.source.file, *_mark(node), format_path(path)[:200],
                                  f"through aliases ('*') the YAML nests deeper than {MAX_YAML_DEPTH} levels; "
                                  "write the values out"))
        self.source.positions.setdefault(path, _location(self.source, node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQUENCE_TAG:
                self._issue(node, path, f"unsupported YAML tag {_tag_name(node.tag)}; write a plain list")
                return None
            return [self.convert(item, (*path, index)) for index, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> Any:
        if node.tag != _MAPPING_TAG:
            self._issue(node, path, f"unsupported YAML tag {_tag_name(node.tag)}; write a plain mapping")
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._issue(key_node, path, "YAML merge keys (<<) are not supported")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(key_node, path, "a mapping key must be a plain name, not a list or mapping")
                continue
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in result:
                _, first_line, _ = self.source.positions[child]
                self._issue(key_node, child,
                            f"duplicate key '{key}' (first defined on line {first_line}); keep only one")
                continue
            self.source.positions[child] = _location(self.source, key_node)
            result[key] = self.convert(value_node, child)
        return result

    def _scalar(self, node: yaml.Node, path: PathKey) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self._issue(node, path, f"unsupported YAML tag {_tag_name(node.tag)}; "
                        "write the value as a plain string, number or boolean")
            return None
        if node.tag == f"{_TAG}timestamp":
            return str(node.value)
        try:
            value = self.constructor.construct_object(node)
        except (ValueError, KeyError, TypeError, OverflowError, yaml.YAMLError) as exc:
            detail = str(exc).split("\n", 1)[0][:120]
            self._issue(node, path, f"{str(node.value)[:40]!r} is not a valid {_tag_name(node.tag)} ({detail}); "
                        "quote it to make it a string")
            return None
        finally:
            self.constructor.constructed_objects.clear()
        if isinstance(value, str) and _BAD_CHARACTERS.search(value):
            bad = _BAD_CHARACTERS.search(value)
            assert bad is not None
            self._issue(node, path, f"the string contains {bad.group()!r} (a NUL or a lone UTF-16 surrogate), "
                        "which no file, path or program argument can hold; remove it")
            return None
        return value
