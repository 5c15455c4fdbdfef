"""Versions the catalog does not know: a torch the manifest pins or an adopted venv holds, and a nunchaku
wheel the manifest names by URL. The catalog is knowledge, not a fence: such a version becomes a
candidate marked uncertain (and every report says so) wherever the facts leave it a chance to work."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from posixpath import basename
from urllib.parse import unquote, urlsplit

from packaging.version import InvalidVersion, Version

from provisioner.catalog import Build, Catalog, NunchakuRelease, TorchRelease
from provisioner.facts import TorchInstall, Venv

# PyPI's torch wheels carry no local label ('2.11.0', not '2.11.0+cu130'); the CUDA runtime they pull in
# says which build they are (nvidia-cuda-runtime 13.0.96 -> CUDA 13.0).
_CUDA_RUNTIMES = ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12",
                  "nvidia-cuda-runtime-cu11")

# nunchaku-1.3.0.dev20260213+cu13.0torch2.12-cp312-cp312-linux_x86_64.whl (the label layout of 1.2.1 on;
# older releases have no cuXX.Y part).
_WHEEL = re.compile(
    r"^nunchaku-(?P<version>[^+-]+)\+(?:cu(?P<cuda>\d+\.\d+))?torch(?P<torch>\d+\.\d+)"
    r"-(?P<python>cp\d+)-[^-]+-(?P<platform>[^-]+)\.whl$"
)


@dataclass(frozen=True)
class WheelName:
    """What a nunchaku wheel's file name says about the build inside it."""

    filename: str
    version: str
    torch: str
    cuda: str | None
    python: str
    platform: str


def parse_wheel_url(url: str) -> WheelName | None:
    filename = unquote(basename(urlsplit(url).path))
    match = _WHEEL.match(filename)
    if match is None:
        return None
    return WheelName(
        filename=filename,
        version=match.group("version"),
        torch=match.group("torch"),
        cuda=match.group("cuda"),
        python=match.group("python"),
        platform=match.group("platform"),
    )


def exact_torch(text: str) -> str | None:
    """'2.13' or '2.13.0' as a version to install; None for auto or a range (those need catalog releases)."""
    if not text[:1].isdigit():
        return None
    try:
        Version(text)
    except InvalidVersion:
        return None
    return text


def minor_of(version: str) -> str:
    return ".".join(Version(version).base_version.split(".")[:2])


def unknown_torch(catalog: Catalog, version: str, cuda: list[str], python: str) -> TorchRelease:
    """A torch release outside the catalog: torchvision/torchaudio are left for pip to match."""
    return TorchRelease(
        minor=minor_of(version),
        torch=version,
        torchvision="",
        torchaudio="",
        cuda=cuda,
        python=[python],
        uncertain=True,
        note="not in the catalog",
    )


def assumed_cuda_builds(catalog: Catalog, pinned: str) -> list[str]:
    """CUDA builds to try for a torch the catalog does not know: the pinned one, else the newest release's."""
    if pinned not in ("auto", "cpu"):
        return [pinned]
    return list(catalog.torch_releases()[0].cuda)


def venv_torch(venv: Venv | None) -> TorchInstall | None:
    """The venv's torch, its CUDA build taken from the CUDA runtime package where the version has no label."""
    torch = venv.torch if venv else None
    if venv is None or torch is None or torch.cuda or torch.local:
        return torch
    for name in _CUDA_RUNTIMES:
        runtime = venv.packages.get(name)
        if runtime:
            try:
                major, minor = Version(runtime).release[:2]
            except (InvalidVersion, ValueError):
                continue
            return torch.model_copy(update={"cuda": f"{major}.{minor}"})
    return torch


def installed_cuda(torch: TorchInstall) -> str | None:
    """The CUDA build of an installed torch; the agent reports a CPU build as 'cpu'."""
    return None if torch.cuda in (None, "", "cpu") else torch.cuda


def installed_torch(catalog: Catalog, torch: TorchInstall, python: str) -> TorchRelease | None:
    """The catalog release an installed torch ('2.8.0+cu128') is, or an uncertain one when it knows none."""
    try:
        version = Version(torch.version)
    except InvalidVersion:
        return None
    known = next((r for r in catalog.torch.releases if Version(r.torch) == Version(version.public)), None)
    if known is not None:
        return known
    cuda = installed_cuda(torch)
    return unknown_torch(catalog, version.public, [cuda] if cuda else [], python)


def torch_matches(installed: TorchInstall, version: str, cuda: str | None) -> bool:
    """PEP 440: a pin without a local label ('2.10.0') matches '2.10.0+cu130'; the CUDA build must agree."""
    try:
        have = Version(installed.version)
    except InvalidVersion:
        return False
    wanted = Version(version)
    parts = len(wanted.release)
    same = have.release[:parts] == wanted.release if parts < 3 else Version(have.public) == wanted
    return same and installed_cuda(installed) == (cuda or None)


def same_build(installed: TorchInstall, minor: str, cuda: str | None) -> bool:
    """The installed torch is this major.minor with this CUDA build (None: the CPU build)."""
    try:
        have = Version(installed.version)
    except InvalidVersion:
        return False
    return minor_of(str(have)) == minor and installed_cuda(installed) == (cuda or None)


def unknown_release(wheel: WheelName, cuda: str, platform: str) -> tuple[NunchakuRelease, Build]:
    """A nunchaku release the catalog does not know, described by its wheel's name alone."""
    build = Build(torch=wheel.torch, cuda=cuda, uncertain=True, note="from nunchaku.wheel_url")
    release = NunchakuRelease(
        version=wheel.version,
        date=datetime.date.min,  # no hosting history: the URL is the manifest's
        python=[wheel.python],
        platforms=[platform],
        hosts=[],
        builds=[build],
        builds_uncertain=True,
        archs={},
        note="not in the catalog; described by nunchaku.wheel_url",
        source="nunchaku.wheel_url",
    )
    return release, build
