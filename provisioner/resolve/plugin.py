"""ComfyUI-nunchaku and ComfyUI constraints: which plugin the manifest lists, pinned refs, and the steps
that check backend ranges, registered nodes and ComfyUI minimums."""

from __future__ import annotations

from packaging.version import Version

from provisioner.catalog import Catalog, PluginRelease, parse_version, specifier, version_key
from provisioner.manifest.model import Manifest, PluginSpec
from provisioner.resolve.combo import Combo, Needs, in_range, python_label
from provisioner.resolve.narrowing import Step


def find_plugin(manifest: Manifest, catalog: Catalog) -> tuple[int, PluginSpec] | None:
    plugins = manifest.comfyui.plugins if manifest.comfyui else []
    for index, plugin in enumerate(plugins):
        if catalog.is_nunchaku_plugin(plugin.name, plugin.repo):
            return index, plugin
    return None


def pinned_plugin(manifest: Manifest, catalog: Catalog, notes: list[str]) -> tuple[bool, PluginRelease | None]:
    """(plugin present and checkable, the pinned release or None for auto)."""
    found = find_plugin(manifest, catalog)
    if found is None:
        return False, None
    ref = found[1].ref
    if ref == "auto":
        return True, None
    release = catalog.plugin_release(ref) if parse_version(ref) else None
    if release is None:
        notes.append(
            f"ComfyUI-nunchaku ref {ref} is not a release the catalog knows; "
            "its backend and ComfyUI requirements are not checked"
        )
        return False, None
    return True, release


def pinned_comfyui(manifest: Manifest, catalog: Catalog, notes: list[str]) -> tuple[list[str | None], str | None]:
    """(ComfyUI versions to consider, the pinned version or None for auto)."""
    if manifest.comfyui is None:
        return [None], None
    known: list[str | None] = [r.version for r in catalog.comfyui_releases()]
    ref = manifest.comfyui.ref
    if ref == "auto":
        return known, None
    version = parse_version(ref)
    if version is None:
        notes.append(f"ComfyUI ref {ref} is not a version; node requirements on ComfyUI are not checked")
        return [None], None
    pinned = str(version)
    return ([pinned] if pinned not in known else []) + known, pinned


def ref_steps(
    catalog: Catalog, plugin_field: str, plugin_pin: PluginRelease | None, comfy_pin: str | None
) -> tuple[Step[Combo], Step[Combo]]:
    plugin = Step[Combo](
        "plugin ref",
        lambda c: plugin_pin is None or c.plugin is plugin_pin,
        lambda r: f"ComfyUI-nunchaku {plugin_pin.version if plugin_pin else ''} is pinned",
        field=plugin_field,
        settable=True,
        label=lambda c: catalog.plugin_tag(c.plugin) if c.plugin else "auto",
    )
    comfy = Step[Combo](
        "comfyui ref",
        lambda c: comfy_pin is None or c.comfyui == comfy_pin,
        lambda r: f"ComfyUI {comfy_pin} is pinned",
        field="comfyui.ref",
        settable=True,
        label=lambda c: catalog.comfyui_tag(c.comfyui) if c.comfyui else "auto",
    )
    return plugin, comfy


def plugin_steps(
    manifest: Manifest,
    catalog: Catalog,
    needs: Needs,
    python: str,
    plugin_pin: PluginRelease | None,
    comfy_pin: str | None,
) -> list[Step[Combo]]:
    found = find_plugin(manifest, catalog)
    plugin_field = f"comfyui.plugins[{found[0]}].ref" if found else "comfyui.plugins"

    def nodes_ok(c: Combo) -> bool:
        if c.plugin is None:
            return True
        have = set(catalog.plugin_nodes(c.plugin))
        return all(node in have for node in needs.nodes)

    def node_backend_ok(c: Combo) -> bool:
        if c.plugin is None or c.release is None:
            return True
        return all(
            version_key(c.release.version) >= version_key(c.plugin.node_backend[node])
            for node in needs.nodes
            if node in c.plugin.node_backend
        )

    def node_comfyui_ok(c: Combo) -> bool:
        if c.plugin is None:
            return True
        return all(
            in_range(rule.versions, c.comfyui) for node, rule in c.plugin.node_comfyui.items() if node in needs.nodes
        )

    def plugin_python_ok(c: Combo) -> bool:
        required = c.plugin.requires_python if c.plugin else None
        return required is None or Version(python_label(python)) in specifier(required)

    def node_rules(reached: list[Combo]) -> str:
        grouped: dict[tuple[str, str, bool], set[str]] = {}
        for c in reached:
            for node, rule in (c.plugin.node_comfyui.items() if c.plugin else ()):
                if c.plugin and node in needs.nodes:
                    grouped.setdefault((node, rule.versions, rule.uncertain), set()).add(c.plugin.version)
        newest_first = sorted(grouped.items(), key=lambda item: max(version_key(v) for v in item[1]), reverse=True)
        rules = [
            f"{node} in ComfyUI-nunchaku {', '.join(sorted(plugins, key=version_key))} needs ComfyUI {versions}"
            + (" (uncertain)" if uncertain else "")
            for (node, versions, uncertain), plugins in newest_first
        ]
        return "; ".join(rules[:4]) or "node requirements on ComfyUI are not met"

    plugin_ref, comfy_ref = ref_steps(catalog, plugin_field, plugin_pin, comfy_pin)
    return [
        plugin_ref,
        Step(
            "plugin nodes",
            nodes_ok,
            lambda r: f"no chosen ComfyUI-nunchaku release registers all of {', '.join(needs.nodes)}",
            field=plugin_field,
            remedy=lambda r: (
                "use a plugin release that registers these nodes (the Qwen-Image loader "
                "arrived in v1.0.0, the Z-Image loader in v1.1.0)"
            ),
        ),
        Step(
            "plugin backend",
            lambda c: c.plugin is None or c.release is None or in_range(c.plugin.backend, c.release.version),
            lambda r: (
                "ComfyUI-nunchaku "
                + ", ".join(
                    sorted({f"{c.plugin.version} needs nunchaku {c.plugin.backend}" for c in r if c.plugin})[:4]
                )
            ),
            field=plugin_field,
        ),
        Step(
            "node backend",
            node_backend_ok,
            lambda r: "the nodes used need a newer nunchaku: " + _node_floors(r, needs),
            field="nunchaku.version",
        ),
        Step(
            "plugin python",
            plugin_python_ok,
            lambda r: (
                f"ComfyUI-nunchaku {', '.join(sorted({c.plugin.version for c in r if c.plugin}))} "
                f"does not support Python {python_label(python)}"
            ),
            field="python.version",
            remedy=lambda r: (
                "set python.version to a version within "
                + ", ".join(sorted({c.plugin.requires_python or "" for c in r if c.plugin}))
            ),
        ),
        comfy_ref,
        Step("node comfyui", node_comfyui_ok, node_rules, field="comfyui.ref"),
        Step(
            "model comfyui",
            lambda c: all(in_range(spec, c.comfyui) for _, spec in needs.comfyui),
            lambda r: "; ".join(f"{why} needs ComfyUI {spec}" for why, spec in needs.comfyui),
            field="comfyui.ref",
        ),
    ]


def _node_floors(reached: list[Combo], needs: Needs) -> str:
    """'NunchakuZImageDiTLoader needs nunchaku >= 1.1.0 (>= 1.2.0 in ComfyUI-nunchaku 1.2.0, 1.2.1)'."""
    floors: dict[str, dict[str, set[str]]] = {}
    for c in reached:
        if c.plugin is None:
            continue
        for node in needs.nodes:
            if node in c.plugin.node_backend:
                floors.setdefault(node, {}).setdefault(c.plugin.node_backend[node], set()).add(c.plugin.version)
    parts = []
    for node, by_floor in floors.items():
        ordered = sorted(by_floor, key=version_key)
        text = f"{node} needs nunchaku >= {ordered[0]}"
        later = [f">= {f} in ComfyUI-nunchaku {', '.join(sorted(by_floor[f], key=version_key))}" for f in ordered[1:]]
        parts.append(text + (f" ({'; '.join(later)})" if later else ""))
    return ", ".join(parts)
