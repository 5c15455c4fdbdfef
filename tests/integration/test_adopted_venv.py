"""python.adopt: someone else's venv (a cloud image's /opt/torch/.venv) is where the stack installs and runs,
used as it is: never created, rebuilt or removed, and no other absolute venv is accepted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.engine import HostSession
from provisioner.errors import ProvisionError
from provisioner.manifest import load_manifest
from tests.support.runs import apply, changed, converge, pending, plan
from tests.support.wheels import build_wheel


def make_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    return path


def installed(venv: Path, name: str) -> bool:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {name}"], capture_output=True)
    return done.returncode == 0


def write(tmp_path: Path, adopt: Path | None, resources: list[dict[str, Any]], name: str = "m.yaml") -> Path:
    data: dict[str, Any] = {
        "name": "adopting",
        "target": {"connection": "local", "root": str(tmp_path / "root")},
        "roles": ["python-env"],
        "resources": resources,
    }
    data["python"] = {"version": f"{sys.version_info[0]}.{sys.version_info[1]}"}
    if adopt is not None:
        data["python"]["adopt"] = str(adopt)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture()
def wheelhouse(tmp_path: Path) -> Path:
    house = tmp_path / "root" / "wheels"  # find_links are URLs or folders under the root
    build_wheel(house, "adoptpkg", "1.0.0")
    return house


def pip_into(venv: str, house: Path) -> dict[str, Any]:
    return {"kind": "pip", "venv": venv, "packages": ["adoptpkg==1.0.0"], "find_links": [house.name],
            "index_url": "http://127.0.0.1:9/simple"}  # nothing listens there: the wheel comes from the folder


def test_packages_go_into_the_adopted_venv_and_none_is_made_under_the_root(tmp_path: Path, wheelhouse: Path) -> None:
    adopted = make_venv(tmp_path / "opt" / "torch-venv")
    config = (adopted / "pyvenv.cfg").read_bytes()
    manifest = write(tmp_path, adopted, [pip_into(str(adopted), wheelhouse)])
    before = plan(manifest)
    assert pending(before) == {f"pip:{adopted}": ["package.adoptpkg"]}, before.as_json()
    converge(manifest)
    assert installed(adopted, "adoptpkg")
    assert not (tmp_path / "root" / "venv").exists()
    # Used as it is: provision did not recreate it (a rebuild writes a new pyvenv.cfg).
    assert (adopted / "pyvenv.cfg").read_bytes() == config


def test_a_missing_adopted_venv_is_reported_and_never_created(tmp_path: Path, wheelhouse: Path) -> None:
    adopted = tmp_path / "opt" / "missing-venv"
    manifest = write(tmp_path, adopted, [pip_into(str(adopted), wheelhouse)])
    report = apply(manifest)
    assert not report.ok
    venv_row = next(r for r in report.resources if r["id"] == f"venv:{adopted}")
    assert venv_row["outcome"] == "failed"
    assert "does not exist" in venv_row["error"] and "python.adopt" in venv_row["error"]
    assert not adopted.exists()


def test_a_broken_adopted_venv_is_not_rebuilt(tmp_path: Path, wheelhouse: Path) -> None:
    adopted = make_venv(tmp_path / "opt" / "venv")
    (adopted / "bin" / "python").unlink()
    manifest = write(tmp_path, adopted, [])
    report = apply(manifest)
    assert not report.ok and changed(report) == []
    assert not (adopted / "bin" / "python").exists()


def test_an_absolute_venv_other_than_the_adopted_one_is_refused(tmp_path: Path, wheelhouse: Path) -> None:
    adopted = make_venv(tmp_path / "opt" / "venv")
    other = make_venv(tmp_path / "elsewhere")
    manifest = write(tmp_path, adopted, [pip_into(str(other), wheelhouse)])
    with pytest.raises(ProvisionError, match="not the adopted venv"):
        HostSession(load_manifest(manifest)).plan()
    no_adopt = write(tmp_path, None, [pip_into(str(other), wheelhouse)], name="n.yaml")
    with pytest.raises(ProvisionError, match="python.adopt"):
        HostSession(load_manifest(no_adopt)).plan()
    assert not installed(other, "adoptpkg")


def test_dropping_the_adoption_never_removes_the_adopted_venv(tmp_path: Path, wheelhouse: Path) -> None:
    adopted = make_venv(tmp_path / "opt" / "venv")
    converge(write(tmp_path, adopted, [{"kind": "directory", "path": "data"}]))
    # The next manifest manages its own venv under the root: the adopted one is not provision's to remove.
    later = write(tmp_path, None, [], name="later.yaml")
    report = plan(later)
    assert not any(str(adopted) in r.key for r in report.removals), [r.as_json() for r in report.removals]
    assert apply(later).ok
    assert (adopted / "bin" / "python").exists() and (tmp_path / "root" / "venv" / "bin" / "python").exists()
