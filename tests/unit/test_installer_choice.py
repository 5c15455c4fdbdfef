"""python.installer reaches every pip and requirements resource, roles' included, and is no part of a digest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.errors import ProvisionError
from provisioner.expand import expand
from provisioner.manifest import load_manifest


def _manifest(tmp_path: Path, python: dict[str, str], own: str | None = None) -> Path:
    pip: dict[str, object] = {"kind": "pip", "name": "demo", "venv": "venv", "packages": ["provdemo==1.0.0"]}
    if own:
        pip["installer"] = own
    body = {"name": "t", "python": python, "roles": ["python-env"],
            "vars": {"python_packages": ["huggingface_hub==0.36.0"]},
            "resources": [pip, {"kind": "requirements", "venv": "venv", "file": "app/requirements.txt"}]}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _installers(path: Path) -> dict[str, tuple[str, str]]:
    return {r.id: (r.spec["installer"], r.digest) for r in expand(load_manifest(path), environ={}).resources
            if r.kind in ("pip", "requirements")}


def test_the_manifests_choice_reaches_role_and_own_resources(tmp_path: Path) -> None:
    default = _installers(_manifest(tmp_path, {"version": "3.11"}))
    assert {installer for installer, _ in default.values()} == {"auto"}
    assert len(default) == 3, "python-env's pip resource, the manifest's pip and requirements resources"
    uv = _installers(_manifest(tmp_path, {"version": "3.11", "installer": "uv"}))
    assert {installer for installer, _ in uv.values()} == {"uv"}
    assert {rid: digest for rid, (_, digest) in uv.items()} == {rid: d for rid, (_, d) in default.items()}, \
        "switching installer changes no resource's digest"


def test_a_resources_own_installer_wins(tmp_path: Path) -> None:
    chosen = _installers(_manifest(tmp_path, {"version": "3.11", "installer": "uv"}, own="pip"))
    assert chosen["pip:venv#demo"][0] == "pip"
    assert chosen["pip:venv"][0] == "uv", "python-env's own pip resource"
    assert chosen["requirements:app/requirements.txt"][0] == "uv"


def test_an_unknown_installer_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError) as caught:
        load_manifest(_manifest(tmp_path, {"version": "3.11", "installer": "conda"}))
    assert "installer" in str(caught.value) and "'uv'" in str(caught.value)
