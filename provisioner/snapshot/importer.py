"""A ComfyUI-Manager snapshot as manifest content: plugins pinned by commit, ComfyUI's commit, pip pins.

What a manifest cannot take over is left out with a note, never guessed:
- disabled node packs (ComfyUI-Manager restores them disabled; a manifest plugin is always enabled);
- single-file nodes (`file_custom_nodes`): the snapshot has only their file names, no source;
- registry (CNR) node packs: the snapshot names a registry id and version, not a repository, and
  registry.comfy.org is not consulted (provision reaches only the hosts it manages and package indexes).
  The one registry id the catalog knows, ComfyUI-nunchaku's, becomes the plugin at that release's tag;
- pips the resolver owns: torch, torchvision, torchaudio, triton and nvidia-* come from the resolved
  PyTorch build and nunchaku from the resolved wheel (a pin of them would fight the resolution);
- pip lines that are no exact pin (`-e` installs, `git+` URLs, comments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from provisioner.agent.distributions import normalize
from provisioner.catalog import Catalog
from provisioner.manifest.model import Manifest, PluginSpec
from provisioner.snapshot.format import GitNode, Snapshot
from provisioner.values import check_name, check_pinned_requirement, check_url

#: Distributions whose version comes from the resolution (torch build, nunchaku wheel), never from a snapshot.
RESOLVER_OWNED = ("torch", "torchvision", "torchaudio", "triton", "nunchaku")
SNAPSHOT_PIP_NAME = "snapshot"


@dataclass
class ImportResult:
    comfyui_ref: str | None
    plugins: list[dict[str, Any]]
    packages: list[str | dict[str, str]]
    notes: list[str] = field(default_factory=list)


def import_snapshot(snapshot: Snapshot, catalog: Catalog, base: Manifest | None = None) -> ImportResult:
    notes: list[str] = []
    plugins = [_plugin(node, catalog, notes) for node in snapshot.git_nodes if not _skip_disabled(node, notes)]
    plugins += _cnr_plugins(snapshot.cnr_nodes, catalog, notes)
    for node in snapshot.file_nodes:
        notes.append(f"single-file node {node.filename} left out: a snapshot names the file but not where it "
                     "comes from; add it as a file resource if it is still needed")
    plugins = _unique(plugins, notes)
    packages = _packages(snapshot.pips, base, notes)
    if snapshot.comfyui is None:
        notes.append("the snapshot records no ComfyUI commit (a custom-nodes-only snapshot): comfyui.ref is unchanged")
    if base is not None:
        plugins = _merged(base, plugins, catalog, notes)
        if base.python.adopt and packages:
            notes.append(f"the pip pins go to the venv {base.python.venv} under the root, not the adopted "
                         f"{base.python.adopt}: a pip resource installs only into a venv provision owns")
    return ImportResult(snapshot.comfyui, plugins, packages, notes)


def _unique(plugins: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """One plugin per custom_nodes folder: a git pin (listed first) wins over a registry version of the same."""
    kept: dict[str, dict[str, Any]] = {}
    for plugin in plugins:
        first = kept.get(plugin["name"].lower())
        if first is None:
            kept[plugin["name"].lower()] = plugin
        else:
            notes.append(f"{plugin['name']} at {plugin['ref']} left out: the snapshot also has it at {first['ref']}, "
                         "which is kept (one folder holds one checkout)")
    return list(kept.values())


def _skip_disabled(node: GitNode, notes: list[str]) -> bool:
    if node.disabled:
        notes.append(f"{node.url} is disabled in the snapshot and left out (a manifest plugin is always enabled)")
    return node.disabled


def _plugin(node: GitNode, catalog: Catalog, notes: list[str]) -> dict[str, Any]:
    name = _folder_name(node.url)
    repo = node.url
    if catalog.is_nunchaku_plugin(name, node.url):
        current = catalog.current_plugin_repo(node.url)
        if current:
            notes.append(f"{node.url} is an older name of {current}; the commit is the same repository's")
            repo = current
        name = catalog.plugin.name
    check_url(repo)
    return {"name": name, "repo": repo, "ref": node.commit}


def _folder_name(url: str) -> str:
    """The custom_nodes folder ComfyUI-Manager clones into: the URL's last segment without .git."""
    last = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git")
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", last).lstrip("._-") or "plugin"
    return check_name(cleaned)


def _cnr_plugins(nodes: dict[str, str], catalog: Catalog, notes: list[str]) -> list[dict[str, Any]]:
    plugins = []
    for node_id, version in nodes.items():
        release = catalog.plugin_release(version) if node_id.lower() == catalog.plugin.registry_id.lower() else None
        if release is not None:
            tag = catalog.plugin_tag(release)
            notes.append(f"registry node {node_id} {version} is {catalog.plugin.name} at its release tag {tag}")
            plugins.append({"name": catalog.plugin.name, "repo": catalog.plugin.repo, "ref": tag})
        else:
            notes.append(f"registry node {node_id} {version} left out: the registry (registry.comfy.org) is not "
                         "consulted, so its repository is unknown; add it to comfyui.plugins with its repo and "
                         "the tag or commit of that version")
    return plugins


def _owned(name: str, base: Manifest | None) -> bool:
    owned = {*RESOLVER_OWNED, *(normalize(p) for p in (base.torch.packages if base else []))}
    return name in owned or name.startswith("nvidia-")


def _packages(pips: dict[str, str] | None, base: Manifest | None, notes: list[str]) -> list[str | dict[str, str]]:
    packages: list[str | dict[str, str]] = []
    owned: list[str] = []
    unusable: list[str] = []
    for line, url in (pips or {}).items():
        name = normalize(re.split(r"[\[=<>!~ @;]", line.strip(), maxsplit=1)[0])
        if name and _owned(name, base):
            owned.append(line.strip() if not url else f"{line} @ {url}")
            continue
        try:
            if url:
                check_url(url)
                if not re.match(r"^(https?|file)://", url):
                    raise ValueError(url)
                packages.append({"requirement": check_pinned_requirement(line), "url": url})
            else:
                packages.append(check_pinned_requirement(line))
        except ValueError:
            unusable.append(line if not url else f"{line} @ {url}")
    if owned:
        notes.append(f"pips the resolver owns left out ({', '.join(owned)}): torch, torchvision, torchaudio, "
                     "triton and nvidia-* come with the resolved PyTorch build and nunchaku with the resolved wheel")
    if unusable:
        notes.append(f"pip lines that are no exact pin or installable URL left out: {', '.join(unusable)}")
    return packages


def _same_plugin(a: PluginSpec | dict[str, Any], b: dict[str, Any], catalog: Catalog) -> bool:
    name, repo = (a.name, a.repo) if isinstance(a, PluginSpec) else (a["name"], a["repo"])
    if catalog.is_nunchaku_plugin(name, repo) and catalog.is_nunchaku_plugin(b["name"], b["repo"]):
        return True
    return name.lower() == str(b["name"]).lower() or _repo_key(repo) == _repo_key(str(b["repo"]))


def _repo_key(url: str) -> str:
    return url.strip().rstrip("/").removesuffix(".git").lower()


def _merged(base: Manifest, plugins: list[dict[str, Any]], catalog: Catalog, notes: list[str]) -> list[dict[str, Any]]:
    """The base's plugins with the snapshot's pins; the base's own settings stay, its other plugins too."""
    merged: list[dict[str, Any]] = []
    taken: set[int] = set()
    for spec in base.comfyui.plugins if base.comfyui else []:
        match = next((i for i, p in enumerate(plugins) if i not in taken and _same_plugin(spec, p, catalog)), None)
        entry = spec.model_dump(mode="json", exclude_defaults=True)
        if match is None:
            notes.append(f"plugin {spec.name} of the base manifest is not in the snapshot; kept as it is")
        else:
            taken.add(match)
            entry.update(name=spec.name, repo=plugins[match]["repo"], ref=plugins[match]["ref"])
        merged.append(entry)
    return merged + [p for i, p in enumerate(plugins) if i not in taken]
