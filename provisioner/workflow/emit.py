"""The manifest sections a workflow needs (`--emit`) and adding them to a manifest file (`workflow import`)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from posixpath import basename
from typing import Any

import yaml

from provisioner.catalog import Catalog
from provisioner.errors import ProvisionError
from provisioner.input_file import read_input_text
from provisioner.manifest import load_manifest
from provisioner.manifest.model import MODEL_FOLDERS, ModelSpec
from provisioner.workflow.analyze import Analysis, same_folder


@dataclass
class Sections:
    """`plugins` are comfyui.plugins entries, `models` models entries; `skipped` says what could not be
    written and why."""

    plugins: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def as_yaml(self) -> str:
        data: dict[str, Any] = {}
        if self.plugins:
            data["comfyui"] = {"plugins": self.plugins}
        if self.models:
            data["models"] = self.models
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120) if data else ""
        notes = "".join(f"# not written: {s}\n" for s in self.skipped)
        return notes + text


def sections(analysis: Analysis, catalog: Catalog, nunchaku: bool = False) -> Sections:
    """With `nunchaku`, the suggested Nunchaku files replace the plain ones they stand in for."""
    out = Sections()
    replaced = {r.replaces_file: r for r in analysis.replacements} if nunchaku else {}
    if analysis.plugins or replaced:
        out.plugins.append({"name": catalog.plugin.name, "repo": catalog.plugin.repo})
    merged = {lora for r in replaced.values() for lora in r.merged_loras}
    seen: set[tuple[str, str, str]] = set()
    for replacement in replaced.values():
        entry = {"repo": replacement.repo, "file": replacement.file_template, "folder": replacement.folder}
        _add(out, seen, entry)
    for model in analysis.models:
        if model.name in replaced or (model.folder == "loras" and model.name in merged):
            continue
        where = f"{model.folder}/{model.name} (node {model.node})"
        if not model.active:
            out.skipped.append(f"{where}: its node is muted or bypassed")
            continue
        if model.folder not in MODEL_FOLDERS:
            out.skipped.append(f"{where}: a manifest cannot place files in {model.folder!r} "
                               f"(one of: {', '.join(MODEL_FOLDERS)})")
            continue
        source = model.huggingface or _catalog_source(model.name, catalog)
        if source is None:
            out.skipped.append(f"{where}: neither the workflow nor the catalog names a Hugging Face repository "
                               "for it; add repo and file by hand")
            continue
        repo, revision, file = source
        if basename(file) != basename(model.name):
            out.skipped.append(f"{where}: its URL names {file}, which would be saved under another name")
            continue
        entry = {"repo": repo, "file": file, "folder": model.folder}
        if revision != "main":
            entry["revision"] = revision
        try:
            ModelSpec.model_validate(entry)
        except ValueError as exc:
            out.skipped.append(f"{where}: not a valid manifest model entry ({str(exc).splitlines()[-1].strip()})")
            continue
        _add(out, seen, entry)
    return out


def _catalog_source(name: str, catalog: Catalog) -> tuple[str, str, str] | None:
    """(repo, revision, file) of a catalog file of this name: an svdq variant or a plain fallback file."""
    for entry in catalog.model_entries():
        variants = list(entry.files) if entry.precision_independent else [
            t.format(precision=precision, rank=rank)
            for t in entry.files for precision, ranks in entry.ranks.items() for rank in ranks]
        for file in variants:
            if basename(file) == name:
                return entry.repo, "main", file
        if entry.fallback is not None and basename(entry.fallback.file) == name:
            return entry.fallback.repo, "main", entry.fallback.file
    return None


def _add(out: Sections, seen: set[tuple[str, str, str]], entry: dict[str, Any]) -> None:
    key = (entry["repo"], entry["file"], entry["folder"])
    if key not in seen:
        seen.add(key)
        out.models.append(entry)


@dataclass
class ImportResult:
    added_plugins: list[str]
    added_models: list[str]
    already: list[str]


def import_sections(manifest_path: Path, new: Sections, catalog: Catalog) -> ImportResult:
    """Add what the manifest (with its bases) lacks, as text appended to or inserted into the user's file:
    comments, order and quoting elsewhere stay as they are. The result must load as a manifest, or the file
    is left untouched."""
    loaded = load_manifest(manifest_path).manifest
    have_plugins = loaded.comfyui.plugins if loaded.comfyui else []
    plugins = [p for p in new.plugins
               if not any(catalog.is_nunchaku_plugin(h.name, h.repo) or h.name == p["name"] for h in have_plugins)]
    models, already = [], []
    for entry in new.models:
        if any(basename(m.file) == basename(entry["file"]) and same_folder(m.folder, entry["folder"])
               for m in loaded.models):
            already.append(f"{entry['folder']}/{basename(entry['file'])}")
        else:
            models.append(entry)
    already += [f"plugin {p['name']}" for p in new.plugins if p not in plugins]
    added_plugins, added_models = list(plugins), list(models)
    text = read_input_text(manifest_path)
    own = yaml.safe_load(text)
    own = own if isinstance(own, dict) else {}
    own_comfyui = own.get("comfyui") if isinstance(own.get("comfyui"), dict) else {}
    # A list in this file replaces its bases' list whole, so a new list repeats what they listed.
    if plugins and "plugins" not in (own_comfyui or {}):
        plugins = [p.model_dump(mode="json", exclude_unset=True) for p in have_plugins] + plugins
    if models and "models" not in own:
        models = [m.model_dump(mode="json", exclude_unset=True) for m in loaded.models] + models
    if plugins:
        text = _insert_plugins(text, plugins, manifest_path)
    if models:
        text = _insert_list(text, "models", models, manifest_path)
    if plugins or models:
        _replace_checked(manifest_path, text)
    return ImportResult([p["name"] for p in added_plugins],
                        [f"{m['folder']}/{basename(m['file'])}" for m in added_models], already)


def _items(entries: list[dict[str, Any]], indent: str) -> str:
    text = yaml.safe_dump(entries, sort_keys=False, default_flow_style=False, width=120)
    return "".join(f"{indent}{line}\n" for line in text.splitlines())


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The index after the last line belonging to the block whose key is at `start`."""
    end = start + 1
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            continue
        width = len(lines[index]) - len(lines[index].lstrip())
        if width < indent or (width == indent and not stripped.startswith("- ")):
            break
        end = index + 1
    return end


def _key_line(lines: list[str], key: str, indent: int, start: int = 0, stop: int | None = None) -> int | None:
    for index in range(start, len(lines) if stop is None else stop):
        line = lines[index]
        if line.startswith(" " * indent + key + ":") and (len(line) - len(line.lstrip())) == indent:
            return index
    return None


def _has_inline_value(line: str) -> bool:
    rest = line.split(":", 1)[1].split("#", 1)[0].strip()
    return bool(rest) and rest != "[]"


def _open_empty_list(lines: list[str], at: int) -> None:
    """`key: []` becomes `key:`, so block items can follow."""
    key, _, rest = lines[at].partition(":")
    value, hash_mark, comment = rest.partition("#")
    if value.strip() == "[]":
        lines[at] = key + ":" + (f"  #{comment}" if hash_mark else "")


def _insert_list(text: str, key: str, entries: list[dict[str, Any]], path: Path) -> str:
    lines = text.splitlines()
    at = _key_line(lines, key, 0)
    if at is None:
        return text.rstrip("\n") + "\n" + f"{key}:\n" + _items(entries, "  ")
    if _has_inline_value(lines[at]):
        raise ProvisionError(f"{path}:{at + 1}: '{key}:' is written in flow style ([...]); write it as a block "
                             f"list so entries can be added, or add these by hand:\n{_items(entries, '  ')}")
    _open_empty_list(lines, at)
    end = _block_end(lines, at, 0)
    item_indent = _item_indent(lines, at, end)
    return "\n".join([*lines[:end], *_items(entries, item_indent).splitlines(), *lines[end:]]) + "\n"


def _item_indent(lines: list[str], start: int, end: int) -> str:
    for line in lines[start + 1:end]:
        if line.lstrip().startswith("- "):
            return line[: len(line) - len(line.lstrip())]
    return "  "


def _insert_plugins(text: str, plugins: list[dict[str, Any]], path: Path) -> str:
    lines = text.splitlines()
    at = _key_line(lines, "comfyui", 0)
    if at is None:
        return text.rstrip("\n") + "\ncomfyui:\n  plugins:\n" + _items(plugins, "    ")
    if _has_inline_value(lines[at]):
        raise ProvisionError(f"{path}:{at + 1}: 'comfyui:' is written in flow style ({{...}}); write it as a "
                             "block so plugins can be added")
    end = _block_end(lines, at, 1)
    child = next((ln for ln in lines[at + 1:end] if ln.strip() and not ln.lstrip().startswith("#")), "  x")
    indent = len(child) - len(child.lstrip())
    plugins_at = _key_line(lines, "plugins", indent, at + 1, end)
    if plugins_at is None:
        block = f"{' ' * indent}plugins:\n" + _items(plugins, " " * (indent * 2))
        return "\n".join([*lines[:end], *block.splitlines(), *lines[end:]]) + "\n"
    if _has_inline_value(lines[plugins_at]):
        raise ProvisionError(f"{path}:{plugins_at + 1}: 'plugins:' is written in flow style ([...]); write it "
                             "as a block list so plugins can be added")
    _open_empty_list(lines, plugins_at)
    plugins_end = _block_end(lines, plugins_at, indent)
    item_indent = _item_indent(lines, plugins_at, plugins_end)
    if len(item_indent) < indent:
        item_indent = " " * (indent * 2)
    return "\n".join([*lines[:plugins_end], *_items(plugins, item_indent).splitlines(), *lines[plugins_end:]]) + "\n"


def _replace_checked(path: Path, text: str) -> None:
    """Write next to the file (so `extends:` paths still resolve), load it, then swap it in."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            load_manifest(Path(temp))
        except ProvisionError as exc:
            raise ProvisionError(f"{path}: left unchanged: with the workflow's entries added it would not load "
                                 f"({str(exc).replace(temp, str(path))})") from None
        os.chmod(temp, path.stat().st_mode & 0o7777)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
