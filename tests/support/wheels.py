"""Build small but real wheels (zip + METADATA + WHEEL + RECORD) that pip installs offline."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path
from urllib.parse import quote

# What download.pytorch.org serves for one torch release: every wheel carries the build as its local
# label (2.10.0+cu130, 2.10.0+cpu), while manifests and the catalog pin the public version.
TORCH_RELEASE = {"torch": "2.10.0", "torchvision": "0.25.0", "torchaudio": "2.10.0"}
OLDER_TORCH_RELEASE = {"torch": "2.9.1", "torchvision": "0.24.1", "torchaudio": "2.9.1"}
# PyPI's unrelated project of the same name: pure Python, no nunchaku._C, no local label.
UNRELATED_NUNCHAKU_SUMMARY = "Optimally partitioning data into piece-wise linear segments."


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    module_body: str = "",
    requires: list[str] | None = None,
    extra_files: dict[str, bytes] | None = None,
    tag: str = "py3-none-any",
    summary: str = "",
) -> Path:
    """Write `{name}-{version}-{tag}.whl` into `directory` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += f"Summary: {summary}\n" if summary else ""
    metadata += "".join(f"Requires-Dist: {req}\n" for req in requires or [])
    # The .dist-info files come last, as bdist_wheel writes them (PEP 427 recommends it): an install
    # cut off half-way has some package files and no metadata, and pip extracts in archive order.
    files: dict[str, bytes] = {
        f"{dist}/__init__.py": (module_body or f"__version__ = {version!r}\n").encode(),
        **(extra_files or {}),
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: provision-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
        ).encode(),
    }
    record_lines = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    record_lines.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    path = directory / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def build_torch_wheels(directory: Path, build: str, release: dict[str, str] | None = None) -> list[Path]:
    """torch, torchvision and torchaudio as a PyTorch index has them: versions labelled `+{build}`, and
    torchvision/torchaudio requiring exactly their torch release, as the real ones do."""
    release = release or TORCH_RELEASE
    torch = f"torch=={release['torch']}"
    return [build_wheel(directory, name, f"{version}+{build}", requires=[] if name == "torch" else [torch])
            for name, version in release.items()]


def build_unrelated_nunchaku(directory: Path, version: str = "0.16.1") -> Path:
    """PyPI's `nunchaku` (0.1.0, 0.15.x, 0.16.x): a pure-Python wheel that shares the import name."""
    return build_wheel(directory, "nunchaku", version, summary=UNRELATED_NUNCHAKU_SUMMARY,
                       module_body="def pwlf_segments():\n    return []\n")


def write_simple_index(wheelhouse: Path, index_root: Path) -> None:
    """Lay out a PEP 503 'simple' index (one page per project) over the wheels in `wheelhouse`."""
    projects: dict[str, list[Path]] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        project = wheel.name.split("-")[0].replace("_", "-").lower()
        projects.setdefault(project, []).append(wheel)
    simple = index_root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    links = []
    for project, wheels in projects.items():
        page = simple / project
        page.mkdir(exist_ok=True)
        anchors = []
        for wheel in wheels:
            sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
            target = page / wheel.name
            target.write_bytes(wheel.read_bytes())
            # Quoted like download.pytorch.org does it: torch-2.10.0%2Bcu130-...whl
            anchors.append(f'<a href="{quote(wheel.name)}#sha256={sha}">{wheel.name}</a><br/>')
        (page / "index.html").write_text("<html><body>" + "".join(anchors) + "</body></html>")
        links.append(f'<a href="{project}/">{project}</a><br/>')
    (simple / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")
