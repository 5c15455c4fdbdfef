"""uv for the tests' hosts: the binary the dev environment installed from PyPI (scripts/setup.sh), placed
where provision keeps the uv it installs, or packed back into its wheel for a package index to serve."""

from __future__ import annotations

import importlib.metadata
import shutil
import zipfile
from pathlib import Path

from tests.support.hosts import TargetHost
from tests.support.wheels import _record_hash

INSTALLERS = ["pip", "uv"]
TOOL_UV = ".provision/tools/uv/bin/uv"


def uv_binary() -> Path:
    from uv import find_uv_bin  # the uv package's own locator for the binary its wheel installed

    return Path(find_uv_bin())


def place_uv(host: TargetHost) -> None:
    """A uv in the target root where an earlier apply with `installer: uv` would have installed it."""
    target = Path(host.path(TOOL_UV))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(uv_binary(), target)


def repack_uv_wheel(directory: Path) -> Path:
    """The installed uv distribution as the wheel PyPI ships (its binary under .data/scripts), file for file."""
    dist = importlib.metadata.distribution("uv")
    version = dist.version
    info = f"uv-{version}.dist-info"
    wheel_tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
                  if line.startswith("Tag:")]
    files: dict[str, bytes] = {}
    for entry in dist.files or []:
        source = Path(str(dist.locate_file(entry))).resolve()
        name = str(entry)
        if name.endswith(".pyc") or name.endswith("/RECORD") or name.endswith("/INSTALLER") or \
                name.endswith("/direct_url.json") or name.endswith("/REQUESTED") or not source.is_file():
            continue
        if name.startswith("../"):  # the binary, installed into the venv's bin/
            name = f"uv-{version}.data/scripts/{source.name}"
        files[name] = source.read_bytes()
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"uv-{version}-{wheel_tags[0]}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            info_entry = zipfile.ZipInfo(member)
            info_entry.external_attr = (0o100755 if "/scripts/" in member else 0o100644) << 16
            info_entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info_entry, data)
    return path


def installed_by(host: TargetHost, name: str, venv: str = "venv") -> str | None:
    """What the dist-info's INSTALLER file names (pip, uv) for `name` in the target's venv."""
    script = ("import importlib.metadata as m, sys\ntry: print(m.distribution(sys.argv[1]).read_text('INSTALLER'))\n"
              "except m.PackageNotFoundError: print('')")
    return host.run([host.path(f"{venv}/bin/python"), "-c", script, name]).stdout.strip() or None
