"""A candidate combination and the small helpers the searches share."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from provisioner.catalog import Build, NunchakuRelease, PluginRelease, TorchRelease, specifier, version_key
from provisioner.resolve.narrowing import Step
from provisioner.resolve.result import Violation

NO_VERSION = Version("0")


@dataclass(frozen=True)
class Needs:
    """What the chosen models and checks ask of the plugin and ComfyUI."""

    nodes: tuple[str, ...]
    comfyui: tuple[tuple[str, str], ...]  # (why, specifier) pairs


@dataclass(frozen=True)
class Combo:
    release: NunchakuRelease | None
    build: Build | None
    torch: TorchRelease | None
    cuda: str | None
    plugin: PluginRelease | None
    comfyui: str | None  # ComfyUI version, None when unknown (branch/commit ref) or no ComfyUI


def version_spec(text: str, field: str) -> tuple[SpecifierSet | None, Violation | None]:
    """'auto' -> None; '2.8' -> ==2.8.*; '2.8.0' -> ==2.8.0; '>=2.7,<2.10' as written."""
    if text == "auto":
        return None, None
    raw = text
    if text[0].isdigit():
        raw = f"=={text}.*" if text.count(".") == 1 else f"=={text}"
    try:
        return SpecifierSet(raw, prereleases=True), None
    except InvalidSpecifier:
        return None, Violation(
            field=field,
            reason=f"{text!r} is not a version or a PEP 440 range",
            fix=f"Set {field} to auto, a version such as 2.8, or a range such as >=2.7,<2.10",
        )


def python_label(tag: str) -> str:
    return f"{tag[2]}.{tag[3:]}"


def in_range(spec: str, version: str | None) -> bool:
    return version is None or version_key(version) in specifier(spec)


def pinned(active: bool, step: Step[Combo]) -> list[Step[Combo]]:
    """A step that only applies when the manifest constrains its setting."""
    return [step] if active else []


def python_choices(tags: set[str]) -> str:
    labels = sorted((python_label(t) for t in tags), key=version_key, reverse=True)
    return (
        labels[0] + (f" (or {', '.join(labels[1:])})" if len(labels) > 1 else "") if labels else "a supported version"
    )
