"""Load a manifest file: YAML with positions, `extends` merging, then validation with located errors."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from provisioner.errors import Issue, ManifestError
from provisioner.manifest.model import Manifest
from provisioner.manifest.source import PathKey, SourceMap, load_yaml_file

MAX_EXTENDS_DEPTH = 16
#: A base manifest's name; longer than any real path, short enough that no OS call chokes on it.
MAX_EXTENDS_NAME = 1024
M = TypeVar("M", bound=BaseModel)


@dataclass
class LoadedManifest:
    """A validated manifest plus where it came from (for role paths and error locations)."""

    manifest: Manifest
    path: Path
    source: SourceMap

    @property
    def directory(self) -> Path:
        return self.path.parent


def load_manifest(path: Path | str) -> LoadedManifest:
    """Read, merge and validate a manifest; every problem is reported at once as a ManifestError."""
    path = Path(path)
    data, source = _load_with_extends(path, chain=())
    if not isinstance(data, dict):
        raise ManifestError([source.issue((), "a manifest must be a mapping of sections (name:, target:, ...)")])
    data.pop("extends", None)
    manifest = validate_model(Manifest, data, source)
    return LoadedManifest(manifest, path, source)


def validate_model(model: type[M], data: Any, source: SourceMap) -> M:
    """Validate `data` against `model`, turning pydantic errors into located, hinted issues."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        schema = model.model_json_schema()
        errors = [e for e in exc.errors(include_url=False) if not _other_union_branch(data, tuple(e["loc"]))]
        issues = [_issue_for(error, data, source, schema) for error in errors]
        issues.sort(key=lambda issue: (issue.file, issue.line or 0, issue.column or 0))
        raise ManifestError(_dedupe(issues)) from None


def _load_with_extends(path: Path, chain: tuple[Path, ...], included_at: Issue | None = None
                       ) -> tuple[Any, SourceMap]:
    """`path` merged over its bases; `included_at` is the `extends` entry that named it, for errors."""
    try:
        # Read first: the reader refuses a link loop, a FIFO or a directory with a clear message.
        loaded = load_yaml_file(path)
    except ManifestError as exc:
        if included_at is None:
            raise
        reasons = "; ".join(issue.message for issue in exc.issues if issue.line is None)
        if not reasons:
            raise
        shown = f"{str(path)[:300]}"
        message = (f"{included_at.message} not found (looked for {shown})" if reasons == "file not found"
                   else f"{included_at.message} ({shown}) {reasons}")
        raise ManifestError([_replace_message(included_at, message),
                             *(issue for issue in exc.issues if issue.line is not None)]) from None
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ManifestError([_replace_message(included_at or Issue(str(path), None, None, "extends", ""),
                                              f"extends cycle: {cycle}; remove one of the links")])
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise ManifestError([_replace_message(included_at or Issue(str(path), None, None, "extends", ""),
                                              f"extends nests deeper than {MAX_EXTENDS_DEPTH} files")])
    data, source = loaded.data, loaded.source
    if not isinstance(data, dict) or "extends" not in data:
        return data, source
    bases = data["extends"]
    base_list = [bases] if isinstance(bases, str) else bases
    if not isinstance(base_list, list) or not all(isinstance(b, str) for b in base_list):
        raise ManifestError([source.issue(("extends",), "extends must be a file name or a list of file names")])
    merged: dict[str, Any] = {}
    merged_source = SourceMap(str(path))
    for index, base in enumerate(base_list):
        where = ("extends",) if isinstance(bases, str) else ("extends", index)
        if not base or len(base) > MAX_EXTENDS_NAME or "\0" in base:
            raise ManifestError([source.issue(where, f"extends names a file by a relative path of 1 to "
                                              f"{MAX_EXTENDS_NAME} characters; got {len(base)} characters")])
        named_at = source.issue(where, f"base manifest {base[:200]!r}")
        base_path = _builtin_base(base, named_at) if base.startswith(BUILTIN_PREFIX) else path.parent / base
        base_data, base_source = _load_with_extends(base_path, (*chain, resolved), named_at)
        if not isinstance(base_data, dict):
            raise ManifestError([base_source.issue((), "a base manifest must be a mapping")])
        base_data.pop("extends", None)
        merged = _merge(merged, merged_source, base_data, base_source, ())
    merged = _merge(merged, merged_source, data, source, ())
    return merged, merged_source


#: `extends: builtin:NAME` names a base manifest shipped in the package (manifests/base/NAME.yaml), found
#: from wherever the manifest is, e.g. one `provision init` wrote.
BUILTIN_PREFIX = "builtin:"


def builtin_bases_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("provisioner.bases")))


def _builtin_base(base: str, named_at: Issue) -> Path:
    name = base.removeprefix(BUILTIN_PREFIX)
    available = sorted(p.stem for p in builtin_bases_dir().glob("*.yaml"))
    if name not in available:
        raise ManifestError([_replace_message(named_at, f"{named_at.message} is not a built-in base; built-in "
                                              f"bases: {', '.join(BUILTIN_PREFIX + a for a in available)}")])
    return builtin_bases_dir() / f"{name}.yaml"


#: An error quotes the offending value; a 1 MB value is shown by its two ends.
MAX_MESSAGE = 600


def shorten(text: str, limit: int = 120) -> str:
    if len(text) <= limit:
        return text
    return f"{text[: limit * 2 // 3]}…[{len(text)} characters]…{text[-(limit // 4):]}"


def _replace_message(issue: Issue, message: str) -> Issue:
    return Issue(issue.file, issue.line, issue.column, issue.field, message)


def _merge(
    base: dict[str, Any], base_source: SourceMap, overlay: dict[str, Any], overlay_source: SourceMap, path: PathKey
) -> dict[str, Any]:
    """Deep-merge mappings (overlay wins); lists and scalars are replaced whole."""
    if path in overlay_source.positions:
        base_source.positions.setdefault(path, overlay_source.positions[path])
    for key, value in overlay.items():
        child = (*path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(base[key], base_source, value, overlay_source, child)
            continue
        for stale in [p for p in base_source.positions if p[: len(child)] == child]:
            del base_source.positions[stale]
        for fresh, location in overlay_source.positions.items():
            if fresh[: len(child)] == child:
                base_source.positions[fresh] = location
        base[key] = value
    return base


def _data_path(data: Any, loc: tuple[str | int, ...]) -> PathKey:
    """Map a pydantic error location onto the data path (dropping union tags such as 'file')."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if _has_child(node, part):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and isinstance(part, str) and node.get("kind") == part:
            continue
        elif isinstance(part, str) and (part.startswith("function-") or part[:1].isupper()
                                        or part in {"str", "list", "dict"}):
            continue  # a union branch or validator name, not a field
        else:
            path.append(part)
            node = None
    return tuple(path)


def _other_union_branch(data: Any, loc: tuple[str | int, ...]) -> bool:
    """True for an error from the union branch that does not match the input's shape.

    A field typed `str | Model` yields one error per branch; a string input only cares about the
    string checks and a mapping input only about the model's.
    """
    node = data
    for part in loc:
        if _has_child(node, part):
            node = node[part]
        elif isinstance(node, dict) and node.get("kind") == part:
            continue
        elif isinstance(part, str) and part[:1].isupper():
            return not isinstance(node, dict)
        else:
            return isinstance(part, str) and part.startswith("function-after") and isinstance(node, dict)
    return False


def _has_child(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _issue_for(error: Any, data: Any, source: SourceMap, schema: dict[str, Any]) -> Issue:
    loc = tuple(error["loc"])
    path = _data_path(data, loc)
    kind = error["type"]
    message = str(error["msg"])
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        known = _known_fields(schema, data, path[:-1])
        message = f"unknown key '{key}'"
        hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if hint:
            message += f"; did you mean '{hint[0]}'?"
        elif known:
            message += f"; expected one of: {', '.join(sorted(known))}"
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "union_tag_invalid":
        message = f"unknown resource kind; {message}"
    elif kind.startswith("value_error"):
        message = message.removeprefix("Value error, ")
    elif "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {shorten(repr(error['input']))})"
    return source.issue(path, shorten(message, MAX_MESSAGE))


def _known_fields(schema: dict[str, Any], data: Any, path: PathKey) -> list[str]:
    """Property names the schema allows at `path` (union branches merged, `kind` unions narrowed)."""
    definitions = schema.get("$defs", {})
    nodes = [schema]
    node_data = data
    for part in path:
        node_data = _child(node_data, part)
        nodes = [child for node in nodes for child in _schema_child(node, part, definitions)]
        nodes = _narrow(nodes, node_data, definitions)
    names: set[str] = set()
    for node in nodes:
        for branch in _expand(node, definitions):
            names.update(branch.get("properties", {}))
    return sorted(names)


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _expand(node: dict[str, Any], definitions: dict[str, Any]) -> list[dict[str, Any]]:
    if "$ref" in node:
        return _expand(definitions[node["$ref"].rsplit("/", 1)[-1]], definitions)
    for union in ("anyOf", "oneOf", "allOf"):
        if union in node:
            return [leaf for branch in node[union] for leaf in _expand(branch, definitions)]
    return [node]


def _schema_child(node: dict[str, Any], part: str | int, definitions: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for branch in _expand(node, definitions):
        if isinstance(part, int) and "items" in branch:
            out.append(branch["items"])
        elif isinstance(part, str):
            if part in branch.get("properties", {}):
                out.append(branch["properties"][part])
            elif isinstance(branch.get("additionalProperties"), dict):
                out.append(branch["additionalProperties"])
    return out


def _narrow(nodes: list[dict[str, Any]], node_data: Any, definitions: dict[str, Any]) -> list[dict[str, Any]]:
    """Keep only the resource branch whose `kind` matches the data, when there is one."""
    if not isinstance(node_data, dict) or "kind" not in node_data:
        return nodes
    leaves = [leaf for node in nodes for leaf in _expand(node, definitions)]
    matching = [leaf for leaf in leaves if leaf.get("properties", {}).get("kind", {}).get("const") == node_data["kind"]]
    return matching or nodes


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[str] = set()
    out = []
    for issue in issues:
        text = str(issue)
        if text not in seen:
            seen.add(text)
            out.append(issue)
    return out
