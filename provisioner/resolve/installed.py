"""What the resolution means for what the venv already holds: what will be replaced, and an adopted venv's
torch, which is never swapped unasked."""

from __future__ import annotations

from packaging.version import Version

from provisioner.catalog import parse_version
from provisioner.facts import Facts, TorchInstall
from provisioner.manifest.model import Manifest
from provisioner.resolve.outside import installed_cuda, minor_of, torch_matches, venv_torch
from provisioner.resolve.result import Resolution, Violation


def describe_venv(result: Resolution, manifest: Manifest, facts: Facts) -> None:
    """Say what happens to what is installed; an adopted venv's torch is never swapped unasked."""
    venv = facts.venv
    if venv is None:
        return
    chosen = result.torch
    installed = venv_torch(venv)
    # Which build an index of the user's own serves is unknown: then only the version is compared, as pip's
    # pin does.
    build_known = manifest.torch.index_url is None
    if installed and chosen and not torch_matches(installed, chosen.version.removesuffix(".*"),
                                                  chosen.cuda if build_known else installed_cuda(installed)):
        build = f"CUDA {chosen.cuda}" if chosen.cuda else "CPU"
        replacement = f"torch {chosen.version} ({build} build)"
        if manifest.python.adopt is not None and manifest.torch.version == "auto":
            minor = minor_of(installed.version)
            result.violations.append(
                Violation(
                    field="python.adopt",
                    reason=f"the adopted venv {venv.path} has torch {_described(installed)}, and this resolution would "
                    f"replace it with {replacement}: {chosen.why}",
                    fix=f"Set torch.version: {minor} to keep the adopted torch"
                    + (" (and nunchaku.wheel_url to a wheel built for it)" if result.mode == "nunchaku" else "")
                    + f", or set torch.version: {chosen.version.removesuffix('.*')} to replace it on purpose, "
                    "or remove python.adopt so that provision builds a venv of its own",
                )
            )
        else:
            result.notes.append(f"torch {_described(installed)} in {venv.path} will be replaced by {replacement}")
    real = venv.nunchaku
    if real and real.real and result.nunchaku:
        wanted = _wheel_version(result.nunchaku.filename) or result.nunchaku.version
        if not _same_version(real.version, wanted):
            result.notes.append(f"nunchaku {real.version} in {venv.path} will be replaced by {wanted}")


def _described(torch: TorchInstall) -> str:
    """'2.11.0+cu130' as installed, or '2.11.0 (CUDA 13.0)' for an unlabelled PyPI wheel."""
    if "+" in torch.version or not installed_cuda(torch):
        return torch.version
    return f"{torch.version} (CUDA {torch.cuda})"


def _wheel_version(filename: str) -> str | None:
    """'1.2.1+cu13.0torch2.10' from the wheel's file name: the build, not just the release."""
    parts = filename.split("-")
    return parts[1] if len(parts) >= 5 and parse_version(parts[1]) else None


def _same_version(installed: str, wanted: str) -> bool:
    """PEP 440: a wanted version without a local label matches any build of it; with one, only that build."""
    have, want = parse_version(installed), parse_version(wanted)
    if have is None or want is None:
        return False
    return have == want if want.local else Version(have.public) == want
