"""The fleet inventory (`fleet.yaml`): hosts, groups, per-host settings and the rollout policy.

```yaml
defaults: {manifest: rtx4090.yaml, target: {user: root}}      # every host starts from these
groups:
  h100: {manifest: h100.yaml, vars: {gpu_count: 8}}
hosts:
  gpu-01: {connection: "ssh://root@gpu-01.rack.example", groups: [h100], vars: {gpu_index: 1}}
rollout: {canary: 1, serial: [1, 5, "25%"], max_fail_percentage: 10, rollback_on_failure: true}
download_cache: {dir: cache}   # optional: downloads fetched once on the controller, pushed to the hosts
```

A host's settings are layered: `defaults`, then its groups in the order it lists them (then groups that
list it under `hosts:`, in file order), then the host itself; `vars`, `target` and `overrides` merge
key by key, `manifest` is replaced.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from provisioner.errors import Issue, ManifestError, ProvisionError
from provisioner.fleet.rollout import SerialItem, check_serial_item
from provisioner.manifest.loader import shorten, validate_model
from provisioner.manifest.model import Target
from provisioner.manifest.source import SourceMap, load_yaml_file
from provisioner.values import Name, check_name

# Manifest sections a host may not override: they define what the manifest *is*, not where it runs.
FIXED_SECTIONS = frozenset({"name", "extends", "target", "vars", "resources", "handlers", "roles", "role_paths"})


class FleetError(ProvisionError):
    """The inventory, a --limit pattern or the rollout state is unusable; the message names which and why."""


class InventoryError(ManifestError):
    """fleet.yaml is invalid; carries every issue found, each with file:line:column."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues)
        count = len(issues)
        header = f"{count} problem{'s' if count != 1 else ''} in inventory:"
        self.args = ("\n".join([header, *(f"  {issue}" for issue in issues)]),)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_target_fields(value: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(value) - set(Target.model_fields))
    if unknown:
        raise ValueError(f"unknown target field(s) {', '.join(unknown)}; known: {', '.join(Target.model_fields)}")
    Target.model_validate(value)  # every field checked as the manifest would check it
    return value


def _check_overrides(value: dict[str, Any]) -> dict[str, Any]:
    from provisioner.manifest.model import Manifest

    for key in value:
        if key in FIXED_SECTIONS:
            raise ValueError(f"'{key}' cannot be overridden per host; use target:/vars: or a separate manifest")
        if key not in Manifest.model_fields:
            raise ValueError(f"'{key}' is not a manifest section")
    return value


class HostSettings(_Strict):
    """What a group (or `defaults`) contributes to its hosts."""

    manifest: str | None = Field(default=None, description="Manifest file, relative to the inventory.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Merged into the manifest's vars.")
    target: dict[str, Any] = Field(default_factory=dict, description="Target fields (user, port, root, ...).")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Manifest sections deep-merged per host, e.g. {gpu: {index: 1}}."
    )

    @field_validator("target")
    @classmethod
    def _target(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_target_fields(value)

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_overrides(value)

    @field_validator("vars")
    @classmethod
    def _vars(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            check_name(key)
        return value


class GroupSpec(HostSettings):
    hosts: list[Name] = Field(default_factory=list, description="Members, besides hosts that list this group.")


class HostSpec(HostSettings):
    connection: str | None = Field(default=None, description="Shorthand for target.connection.")
    root: str | None = Field(default=None, description="Shorthand for target.root.")
    groups: list[Name] = Field(default_factory=list)


class CheckSpec(_Strict):
    """A program run on each host after its apply (in the target root); exit 0 means healthy."""

    name: Name
    argv: list[str] = Field(min_length=1, description="Items are templates over the host's vars, `host`, `root`.")
    timeout: float = Field(default=120.0, gt=0)


class GateSpec(_Strict):
    """A program run on the controller between batches; a non-zero exit stops the rollout."""

    argv: list[str] = Field(min_length=1)
    timeout: float = Field(default=600.0, gt=0)


class RolloutSpec(_Strict):
    serial: SerialItem | list[SerialItem] = Field(
        default=0, description="Batch sizes as in Ansible: 5, '25%' or [1, 5, '25%'] (the last repeats); 0 = all."
    )
    canary: SerialItem | None = Field(
        default=None, description="Size of a first batch whose hosts must all pass before any other starts."
    )
    max_fail_percentage: float | None = Field(
        default=None, ge=0, le=100, description="Abort when a batch's failures exceed this share (not when equal)."
    )
    pause_seconds: float = Field(default=0, ge=0, description="Wait between batches.")
    gate: GateSpec | None = None
    checks: list[CheckSpec] = Field(default_factory=list)
    rollback_on_failure: bool = Field(default=False, description="Return failed hosts to their previous generation.")
    forks: int = Field(default=10, ge=1, le=1000, description="Hosts worked on at once (--forks overrides).")

    @field_validator("serial")
    @classmethod
    def _serial(cls, value: SerialItem | list[SerialItem]) -> SerialItem | list[SerialItem]:
        if isinstance(value, list):
            return [check_serial_item(item) for item in value]
        return check_serial_item(value)

    @field_validator("canary")
    @classmethod
    def _canary(cls, value: SerialItem | None) -> SerialItem | None:
        if value is None:
            return None
        value = check_serial_item(value)
        if value == 0:
            raise ValueError("a canary of 0 hosts: leave canary out, or give 1 or more hosts")
        return value


class DownloadCacheSpec(_Strict):
    """Fetch each download once into a directory on the controller and push it to the hosts that need it."""

    dir: str = Field(min_length=1, description="Cache directory on the controller, relative to the inventory; "
                     "~ expands. `fleet apply --download-cache DIR` overrides it.")


class InventorySpec(_Strict):
    defaults: HostSettings = Field(default_factory=HostSettings)
    groups: dict[Name, GroupSpec] = Field(default_factory=dict)
    hosts: dict[Name, HostSpec] = Field(min_length=1)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    download_cache: DownloadCacheSpec | None = None

    @field_validator("download_cache", mode="before")
    @classmethod
    def _cache_mapping(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"expected a mapping with the directory under dir:, e.g. download_cache: {{dir: {value}}}")
        return value

    @model_validator(mode="after")
    def _references(self) -> InventorySpec:
        problems = []
        for host_name, host in self.hosts.items():
            problems += [f"host {host_name} lists unknown group '{g}'" for g in host.groups if g not in self.groups]
        for group_name, group in self.groups.items():
            problems += [f"group {group_name} lists unknown host '{h}'" for h in group.hosts if h not in self.hosts]
            if group_name in self.hosts:
                problems.append(f"'{group_name}' is both a group and a host; --limit could not tell them apart")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass
class FleetHost:
    """One host with its layered settings resolved."""

    name: str
    manifest: Path
    groups: list[str]
    vars: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Inventory:
    path: Path
    spec: InventorySpec
    hosts: list[FleetHost]
    source: SourceMap

    @property
    def rollout(self) -> RolloutSpec:
        return self.spec.rollout

    @property
    def download_cache(self) -> Path | None:
        """The controller's download cache directory, or None where the hosts fetch downloads themselves."""
        if self.spec.download_cache is None:
            return None
        return _cache_dir(self.path, self.spec.download_cache.dir)

    def select(self, limit: str | None) -> list[FleetHost]:
        return select_hosts(self, limit)


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key (overlay wins); anything else is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_inventory(path: Path | str) -> Inventory:
    """Read and validate fleet.yaml; every problem is reported with its file:line."""
    path = Path(path)
    if not os.path.lexists(path):
        raise FleetError(f"inventory {path} not found; pass the path of a fleet.yaml "
                         "(see manifests/fleet.example.yaml)")
    try:
        loaded = load_yaml_file(path)
        if not isinstance(loaded.data, dict):
            raise InventoryError([loaded.source.issue((), "an inventory must be a mapping with hosts: (and groups:)")])
        spec = validate_model(InventorySpec, loaded.data, loaded.source)
    except InventoryError:
        raise
    except ManifestError as exc:
        raise InventoryError(exc.issues) from None
    hosts = [_resolve_host(name, spec, path, loaded.source) for name in spec.hosts]
    if spec.download_cache is not None:
        _check_cache_dir(path, spec.download_cache.dir, loaded.source)
    return Inventory(path, spec, hosts, loaded.source)


def _cache_dir(inventory: Path, value: str) -> Path:
    directory = Path(value).expanduser()
    return directory if directory.is_absolute() else inventory.parent / directory


def _check_cache_dir(inventory: Path, value: str, source: SourceMap) -> None:
    directory = _cache_dir(inventory, value)
    if directory.exists() and not directory.is_dir():
        raise InventoryError([source.issue(("download_cache", "dir"), f"{directory} exists and is not a directory; "
                                          "name a directory for the download cache (it is created if missing)")])


def _resolve_host(name: str, spec: InventorySpec, path: Path, source: SourceMap) -> FleetHost:
    host = spec.hosts[name]
    group_names = list(host.groups) + [g for g, group in spec.groups.items() if name in group.hosts
                                       and g not in host.groups]
    layers: list[HostSettings] = [spec.defaults, *(spec.groups[g] for g in group_names), host]
    manifest: str | None = None
    merged_vars: dict[str, Any] = {}
    target: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for layer in layers:
        manifest = layer.manifest or manifest
        merged_vars = deep_merge(merged_vars, layer.vars)
        target = deep_merge(target, layer.target)
        overrides = deep_merge(overrides, layer.overrides)
    if host.connection is not None:
        target["connection"] = host.connection
    if host.root is not None:
        target["root"] = host.root
    if manifest is None:
        raise InventoryError([source.issue(("hosts", name), f"host {name} has no manifest: set manifest: on the host, "
                                          "one of its groups, or defaults")])
    manifest_path = (path.parent / manifest) if not Path(manifest).is_absolute() else Path(manifest)
    if not _exists(manifest_path):
        raise InventoryError([source.issue(("hosts", name), f"host {name}: manifest {shorten(manifest)} not found "
                                          f"(looked for {shorten(str(manifest_path), 300)})")])
    try:
        Target.model_validate(target)
    except ValueError as exc:
        raise InventoryError([Issue(*source.locate(("hosts", name)), "target",
                                   f"host {name}: its layered target is invalid: {exc}")]) from None
    return FleetHost(name, manifest_path, group_names, merged_vars, target, overrides)


def _exists(path: Path) -> bool:
    """Whether `path` names something; the manifest reader then says what is wrong with it, if anything."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):  # a name too long for the OS, a NUL in it
        return False


def select_hosts(inventory: Inventory, limit: str | None) -> list[FleetHost]:
    """Hosts matching --limit: comma-separated names, group names or globs; a leading '!' excludes.

    Inventory order is kept (it is the rollout order).
    """
    if not limit:
        return list(inventory.hosts)
    include: list[str] = []
    exclude: list[str] = []
    for raw in limit.split(","):
        pattern = raw.strip()
        if pattern:
            (exclude if pattern.startswith("!") else include).append(pattern.lstrip("!"))

    def matches(host: FleetHost, pattern: str) -> bool:
        return fnmatch.fnmatchcase(host.name, pattern) or any(fnmatch.fnmatchcase(g, pattern) for g in host.groups)

    for pattern in include + exclude:
        if not any(matches(h, pattern) for h in inventory.hosts):
            known = ", ".join(sorted(inventory.spec.groups)) or "none"
            raise FleetError(f"--limit {pattern!r} matches no host or group in {inventory.path} (groups: {known})")
    chosen = [h for h in inventory.hosts if not include or any(matches(h, p) for p in include)]
    return [h for h in chosen if not any(matches(h, p) for p in exclude)]
