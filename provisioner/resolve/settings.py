"""ComfyUI-nunchaku loader settings that depend on the host (CPU offload by GPU memory, float16 and the
nunchaku-fp16 attention on Turing), and the manifest's comfyui.plugins[].settings checked against the
inputs the plugin's loaders really take."""

from __future__ import annotations

from typing import Any

from provisioner.catalog import Catalog, PluginRelease, PluginSetting, version_key
from provisioner.instances import VISIBLE_INDEX
from provisioner.manifest.model import Manifest, PluginSpec
from provisioner.resolve.host import Host
from provisioner.resolve.result import PluginSettingChoice, Resolution, Violation

MIB_PER_GIB = 1024


def resolve_settings(
    manifest: Manifest,
    catalog: Catalog,
    host: Host,
    index: int,
    spec: PluginSpec,
    release: PluginRelease | None,
    result: Resolution,
) -> tuple[list[PluginSettingChoice], list[Violation]]:
    """Host-derived values first (nunchaku mode only), then the manifest's, which win."""
    chosen: dict[str, PluginSettingChoice] = {}
    if result.mode == "nunchaku":
        nodes = {m.node for m in result.models if m.node} | set(manifest.checks.nodes)
        for offered in catalog.plugin.settings:
            if _available(offered, release):
                value = _from_host(offered, host, nodes, manifest.gpu.index)
                if value is not None:
                    chosen[offered.name] = value
    problems: list[Violation] = []
    for name, value in spec.settings.items():
        field = f"comfyui.plugins[{index}].settings.{name}"
        setting = catalog.plugin_setting(name)
        if setting is None:
            known = ", ".join(s.name for s in catalog.plugin.settings)
            problems.append(
                Violation(
                    field=field,
                    reason=f"ComfyUI-nunchaku's loaders take no input named {name!r}",
                    fix=f"Remove {name} from comfyui.plugins[{index}].settings, or use one of: {known}",
                )
            )
            continue
        if not _available(setting, release):
            problems.append(
                Violation(
                    field=field,
                    reason=f"{name} arrived in ComfyUI-nunchaku {setting.since}; "
                    f"{release.version if release else '?'} has no such input",
                    fix=f"Remove {name}, or set comfyui.plugins[{index}].ref to v{setting.since} or newer",
                )
            )
            continue
        problem = _check_value(setting, value, field, turing=result.mode == "nunchaku" and _turing(host))
        if problem is not None:
            problems.append(problem)
            continue
        chosen[name] = PluginSettingChoice(
            name=name,
            value=value,
            source="manifest",
            nodes=list(setting.nodes),
            why=f"set by {field}"
            + (f" (the host would get {chosen[name].value})" if name in chosen and chosen[name].value != value else ""),
        )
    return list(chosen.values()), problems


def _available(setting: PluginSetting, release: PluginRelease | None) -> bool:
    return release is None or version_key(release.version) >= version_key(setting.since)


def _turing(host: Host) -> bool:
    return host.arch_info is not None and not host.arch_info.bf16


def _from_host(setting: PluginSetting, host: Host, nodes: set[str], gpu_index: int) -> PluginSettingChoice | None:
    turing = _turing(host)
    family = host.arch_info.family if host.arch_info else "this GPU"
    if setting.name == "cpu_offload":
        return _offload(setting, host, nodes)
    if setting.name == "device_id":
        # The service runs with CUDA_VISIBLE_DEVICES narrowed to its GPU (provisioner.instances): the
        # process sees that GPU alone, as device 0.
        return PluginSettingChoice(name=setting.name, value=VISIBLE_INDEX, source="host", nodes=list(setting.nodes),
                                   why=f"ComfyUI sees only GPU {gpu_index} (CUDA_VISIBLE_DEVICES), as device "
                                   f"{VISIBLE_INDEX}")
    if setting.name == "data_type":
        value = "float16" if turing else "bfloat16"
        why = (
            f"{host.arch} ({family}) has no BF16, so the loader offers float16 only"
            if turing
            else f"{host.arch} ({family}) computes in BF16"
        )
    elif setting.name == "attention":
        value = "nunchaku-fp16" if turing else "flash-attention2"
        why = (
            f"{host.arch} ({family}) cannot run flash-attention2, so the loader offers nunchaku-fp16 only"
            if turing
            else f"{host.arch} ({family}) runs flash-attention2 (BF16 attention; nunchaku-fp16 is ~1.2x faster in FP16)"
        )
    else:
        return None
    return PluginSettingChoice(name=setting.name, value=value, source="host", nodes=list(setting.nodes), why=why)


def _offload(setting: PluginSetting, host: Host, nodes: set[str]) -> PluginSettingChoice | None:
    total = host.gpu.memory_total_mib if host.gpu else None
    if total is None:
        return None  # no GPU seen (resolving for a declared arch): the loader's own "auto" decides there
    used = {node: mib for node, mib in setting.offload_below_mib.items() if node in nodes}
    thresholds = used or setting.offload_below_mib
    node, limit = max(thresholds.items(), key=lambda pair: pair[1])
    value = "enable" if total < limit else "disable"
    have = f"{total / MIB_PER_GIB:.1f} GiB"
    why = (
        f"the GPU has {have}, {'below' if value == 'enable' else 'at or above'} the "
        f"{limit / MIB_PER_GIB:g} GiB under which {node} offloads to the CPU (its 'auto')"
    )
    return PluginSettingChoice(
        name=setting.name, value=value, source="host", nodes=sorted(used or setting.offload_below_mib), why=why
    )


def _check_value(setting: PluginSetting, value: Any, field: str, turing: bool) -> Violation | None:
    if setting.values is not None:
        allowed = setting.turing_values if turing and setting.turing_values else setting.values
        if isinstance(value, str) and value in allowed:
            return None
        where = " on Turing" if turing and setting.turing_values else ""
        return Violation(
            field=field,
            reason=f"{value!r} is not a value ComfyUI-nunchaku's {', '.join(setting.nodes)} accepts{where} "
            f"for {setting.name}",
            fix=f"Set {field} to one of: {', '.join(allowed)}",
        )
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if setting.integer and not isinstance(number, int):
        number = None
    low, high = setting.minimum, setting.maximum
    if number is not None and (low is None or number >= low) and (high is None or number <= high):
        return None
    kind = "a whole number" if setting.integer else "a number"
    return Violation(
        field=field,
        reason=f"{setting.name} must be {kind} from {low:g} to {high:g}, not {value!r}"
        if low is not None and high is not None
        else f"{setting.name} must be {kind}, not {value!r}",
        fix=f"Set {field} to {kind}" + (f" from {low:g} to {high:g}" if low is not None and high is not None else ""),
    )
