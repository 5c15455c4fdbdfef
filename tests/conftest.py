"""Shared fixtures: target hosts, a wheelhouse + package index, and upstream git repos."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gitrepos import UpstreamRepo, make_upstream
from tests.support.hosts import TargetHost
from tests.support.servers import serve_directory
from tests.support.wheels import build_wheel, write_simple_index

HOST_KINDS = ["local", "ssh", "docker"]


@pytest.fixture(autouse=True, scope="session")
def _isolated_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the tests' runs out of the user's ledger (CLI subprocesses inherit this)."""
    previous = os.environ.get("PROVISION_LEDGER")
    os.environ["PROVISION_LEDGER"] = str(tmp_path_factory.mktemp("ledger") / "ledger.sqlite")
    yield
    if previous is None:
        os.environ.pop("PROVISION_LEDGER", None)
    else:
        os.environ["PROVISION_LEDGER"] = previous


@pytest.fixture(params=HOST_KINDS)
def host(request: pytest.FixtureRequest, tmp_path: Path) -> TargetHost:
    """A fresh target root on each kind of host: the same tests run over every transport."""
    if request.param == "local":
        return TargetHost("local", "local", str(tmp_path / "root"))
    if request.param == "ssh":
        from tests.support.sshd import ssh_target_host

        return ssh_target_host(request, tmp_path)
    if request.param == "docker":
        from tests.support.dockerd import docker_target_host

        return docker_target_host(request, tmp_path)
    raise AssertionError(request.param)


@pytest.fixture
def image_build_turn() -> Iterator[None]:
    """For a test that builds images (docker-image://): one such test at a time on the machine."""
    from tests.support.dockerd import image_build_turn as turn

    with turn():
        yield


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real wheels: a package in two versions with a dependency, and a same-named impostor."""
    house = tmp_path_factory.mktemp("wheelhouse")
    build_wheel(house, "provdemo", "1.0.0", requires=["provdep==1.0.0"])
    build_wheel(house, "provdemo", "2.0.0", requires=["provdep==1.0.0"])
    build_wheel(house, "provdep", "1.0.0")
    build_wheel(house / "impostor", "provdemo", "2.0.0", module_body="IMPOSTOR = True\n")
    return house


@pytest.fixture(scope="session")
def package_index(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PEP 503 index over the wheelhouse on 127.0.0.1; yields its /simple URL."""
    root = tmp_path_factory.mktemp("index")
    write_simple_index(wheelhouse, root)
    (root / "files").mkdir()
    for wheel in wheelhouse.rglob("*.whl"):
        folder = root / "files" / wheel.parent.name
        folder.mkdir(exist_ok=True)
        (folder / wheel.name).write_bytes(wheel.read_bytes())
    with serve_directory(root) as base:
        yield f"{base}/simple"


@pytest.fixture
def upstream(tmp_path: Path) -> UpstreamRepo:
    """A bare repo with tags v1.0.0 and v1.1.0 on main."""
    repo = make_upstream(tmp_path / "upstreams", "app")
    repo.commit({"README.md": "v1.0.0\n", "app.py": "print('one')\n", ".gitignore": "cache/\n"}, "one", tag="v1.0.0")
    repo.commit({"app.py": "print('two')\n"}, "two", tag="v1.1.0")
    return repo
