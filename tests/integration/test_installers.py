"""pip and uv install the same things: requirements files under constraints that keep torch, pre-releases,
pip's configuration, the choice `auto` makes, uv installed from the index, the repair of a cut-off
install, and a drift check that does not care which of the two installed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.installers import INSTALLERS, TOOL_UV, installed_by, place_uv, repack_uv_wheel, uv_binary
from tests.support.runs import apply, changed, converge, pending, plan
from tests.support.servers import serve_directory
from tests.support.wheels import OLDER_TORCH_RELEASE, build_torch_wheels, build_wheel, write_simple_index


def _local(tmp_path: Path, installer: str) -> TargetHost:
    host = TargetHost("local", "local", str(tmp_path / "root"))
    if installer == "uv":
        place_uv(host)
    return host


@pytest.fixture(scope="module")
def torch_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PyTorch-like index (labelled builds) that also serves a plugin needing another torch, a plugin
    happy with any, a package with a release candidate, and uv's own wheel."""
    wheels = tmp_path_factory.mktemp("torch-wheels")
    build_torch_wheels(wheels, "cu130")
    build_torch_wheels(wheels, "cu130", OLDER_TORCH_RELEASE)
    build_wheel(wheels, "provoldtorch", "1.0.0", requires=["torch==2.9.1"])
    build_wheel(wheels, "provanytorch", "1.0.0", requires=["torch", "provdep>=1.0"])
    build_wheel(wheels, "provdep", "1.0.0")
    build_wheel(wheels, "provpre", "1.0.0")
    build_wheel(wheels, "provpre", "2.0.0rc1")
    build_wheel(wheels, "provonlypre", "3.0.0b1")
    repack_uv_wheel(wheels)
    root = tmp_path_factory.mktemp("torch-index")
    write_simple_index(wheels, root)
    with serve_directory(root) as base:
        yield f"{base}/simple"


def _requirements_manifest(tmp_path: Path, host: TargetHost, index: str, installer: str, lines: list[str],
                           constraints: list[str]) -> Path:
    return write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "name": "torch", "venv": "venv", "packages": ["torch==2.10.0", "torchvision"],
         "index_url": index, "installer": installer},
        {"kind": "file", "path": "app/requirements.txt", "content": "\n".join(lines) + "\n"},
        {"kind": "requirements", "venv": "venv", "file": "app/requirements.txt", "constraints": constraints,
         "index_url": index, "installer": installer},
    ]})


@pytest.mark.parametrize("installer", INSTALLERS)
def test_requirements_under_constraints_keep_torch(tmp_path: Path, torch_index: str, installer: str) -> None:
    host = _local(tmp_path, installer)
    manifest = _requirements_manifest(tmp_path, host, torch_index, installer,
                                      ["torch", "torchvision", "provanytorch"], ["torch==2.10.0"])
    converge(manifest)
    assert installed_version(host, "torch") == "2.10.0+cu130", "the constraint's public version met by the label"
    assert installed_version(host, "torchvision") == "0.25.0+cu130"
    assert installed_version(host, "provanytorch") == "1.0.0"
    assert installed_by(host, "provanytorch") == installer

    # A plugin that wants another torch: the install is refused and torch stays, as pip does it.
    wants_old = _requirements_manifest(tmp_path, host, torch_index, installer, ["provoldtorch"], ["torch==2.10.0"])
    report = apply(wants_old)
    assert report.failures == ["requirements:app/requirements.txt"]
    error = next(r["error"] for r in report.resources if r["id"] == "requirements:app/requirements.txt")
    assert ("uv pip install" if installer == "uv" else "pip install") in error and "torch" in error, error
    assert installed_version(host, "torch") == "2.10.0+cu130"
    assert installed_version(host, "provoldtorch") is None
    assert pending(plan(wants_old)) == {"requirements:app/requirements.txt": ["packages"]}


@pytest.mark.parametrize("installer", INSTALLERS)
def test_pre_releases_only_when_pinned_or_the_only_ones(tmp_path: Path, torch_index: str, installer: str) -> None:
    host = _local(tmp_path, installer)

    def manifest(packages: list[str]) -> Path:
        return write_manifest(tmp_path, host, {"resources": [
            {"kind": "venv", "path": "venv"},
            {"kind": "pip", "venv": "venv", "packages": packages, "index_url": torch_index, "installer": installer},
        ]})

    converge(manifest(["provpre", "provonlypre"]))
    assert installed_version(host, "provpre") == "1.0.0", "a bare name skips the release candidate"
    assert installed_version(host, "provonlypre") == "3.0.0b1", "nothing but pre-releases: the newest is taken"
    converge(manifest(["provpre==2.0.0rc1"]))
    assert installed_version(host, "provpre") == "2.0.0rc1"


@pytest.mark.parametrize("installer", INSTALLERS)
def test_pips_configuration_reaches_either_installer(tmp_path: Path, package_index: str, wheelhouse: Path,
                                                     installer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _local(tmp_path, installer)
    # The index named in the manifest has no provdep; pip's find-links from the environment has it.
    links = tmp_path / "links"
    links.mkdir()
    (links / "provdep-1.0.0-py3-none-any.whl").write_bytes((wheelhouse / "provdep-1.0.0-py3-none-any.whl").read_bytes())
    monkeypatch.setenv("PIP_FIND_LINKS", f"{links} {tmp_path / 'no-such-folder'}")
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": ["provdep==1.0.0"], "no_deps": True, "installer": installer,
         "index_url": package_index + "/nonexistent-so-the-configured-links-must-serve"},
    ]})
    converge(manifest)
    assert installed_by(host, "provdep") == installer


def test_auto_takes_uv_from_path_and_pip_without_one(tmp_path: Path, package_index: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def manifest(root: str) -> tuple[TargetHost, Path]:
        host = TargetHost("local", "local", str(tmp_path / root))
        return host, write_manifest(tmp_path, host, {"resources": [
            {"kind": "venv", "path": "venv"},
            {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": package_index},
        ]}, name=f"{root}.yaml")

    bare_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                if not (Path(p) / "uv").exists())
    monkeypatch.setenv("PATH", bare_path)
    host, without = manifest("without-uv")
    converge(without)
    assert installed_by(host, "provdemo") == "pip"

    monkeypatch.setenv("PATH", f"{uv_binary().parent}{os.pathsep}{bare_path}")
    host, with_uv = manifest("with-uv")
    old_cache = Path(host.path(".provision/cache/uv/archive-v0/x"))  # earlier versions' shared cache
    old_cache.mkdir(parents=True)
    converge(with_uv)
    assert installed_by(host, "provdemo") == "uv"
    # uv hard-linked from a cache of the run's own, dropped after the install: the venv's files are its
    # own (an edit there reaches no other venv), and nothing of the cache is left under the root.
    site = next(Path(host.path("venv")).glob("lib/python3*/site-packages"))
    files = [p for p in site.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files and all(p.stat().st_nlink == 1 for p in files), [p for p in files if p.stat().st_nlink != 1][:5]
    assert not list(Path(host.root).rglob("uv-cache*")) and not Path(host.path(".provision/cache/uv")).exists()


def test_installer_uv_installs_uv_from_the_index_once(tmp_path: Path, torch_index: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "uv").exists()))
    host = TargetHost("local", "local", str(tmp_path / "root"))
    manifest = write_manifest(tmp_path, host, {"python": {"installer": "uv"}, "resources": [
        {"kind": "venv", "path": "venv", "index_url": torch_index},
        {"kind": "pip", "venv": "venv", "packages": ["provdep==1.0.0"], "index_url": torch_index},
    ]})
    converge(manifest)
    assert Path(host.path(TOOL_UV)).is_file()
    assert installed_by(host, "provdep") == "uv"
    assert installed_version(host, "uv") is None, "uv lives beside the venv, not in it"
    assert not [p for p in Path(host.path(".provision/tools")).iterdir() if ".provision-" in p.name]
    # No venv had a pip yet: the interpreter's bundled pip wheel installed uv, and uv made the venv.
    assert installed_by(host, "pip") == "uv"
    bundled = _ensurepip_versions(host)
    assert bundled == {name: installed_version(host, name) for name in bundled}, "what python -m venv installs"


def _ensurepip_versions(host: TargetHost) -> dict[str, str]:
    """What `python -m venv` installs into a venv of its interpreter: ensurepip's bundled versions."""
    script = ("import ensurepip, json\nget = getattr(ensurepip, '_get_packages', None)\n"
              "print(json.dumps({n: p.version for n, p in get().items()} if get else {'pip': ensurepip.version()}))")
    return json.loads(host.run([host.path("venv/bin/python"), "-c", script]).stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_venv_has_a_whole_pip_whichever_installer_made_it(tmp_path: Path, package_index: str,
                                                            installer: str) -> None:
    host = _local(tmp_path, installer)
    manifest = write_manifest(tmp_path, host, {"python": {"installer": installer}, "resources": [
        {"kind": "venv", "path": "venv"},
    ]})
    converge(manifest)
    assert installed_by(host, "pip") == installer, "with uv at hand, uv installs the venv's pip"
    bundled = _ensurepip_versions(host)
    assert bundled == {name: installed_version(host, name) for name in bundled}, "the interpreter's own pip"
    pip = host.run([host.path("venv/bin/pip"), "install", "--no-input", "--index-url", package_index,
                    "provdep==1.0.0"])
    assert pip.returncode == 0, pip.stderr
    assert installed_version(host, "provdep") == "1.0.0"
    launcher = Path(host.path("venv/bin/pip")).read_text()
    assert host.path("venv/bin/python") in launcher and ".provision-" not in launcher, "the venv, not its staging"


def test_installer_uv_without_uv_anywhere_says_how_to_fix_it(tmp_path: Path, package_index: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "uv").exists()))
    # pip's own index, tried after the resource's, is one with nothing on it either.
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", package_index)
    host = TargetHost("local", "local", str(tmp_path / "root"))
    manifest = write_manifest(tmp_path, host, {"python": {"installer": "uv"}, "resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": ["provdep==1.0.0"], "index_url": package_index},
    ]})
    report = apply(manifest)
    assert report.failures == ["pip:venv"]
    error = report.resources[1]["error"]
    assert "no uv on the host" in error and "python.installer: pip" in error, error
    assert not Path(host.path(TOOL_UV)).exists()


@pytest.mark.parametrize(("first", "then"), [("uv", "pip"), ("pip", "uv")])
def test_switching_installer_is_no_drift(tmp_path: Path, package_index: str, first: str, then: str) -> None:
    host = _local(tmp_path, "uv")

    def manifest(installer: str) -> Path:
        return write_manifest(tmp_path, host, {"python": {"installer": installer}, "resources": [
            {"kind": "venv", "path": "venv"},
            {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": package_index},
        ]})

    converge(manifest(first))
    assert installed_by(host, "provdemo") == first
    report = plan(manifest(then))
    assert report.exit_code() == 0, pending(report)
    assert changed(apply(manifest(then))) == []


@pytest.mark.parametrize("installer", INSTALLERS)
def test_an_install_cut_off_is_repaired_by_either_installer(tmp_path: Path, package_index: str,
                                                            installer: str) -> None:
    host = _local(tmp_path, installer)
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": package_index,
         "installer": installer},
    ]})
    converge(manifest)
    # What a killed pip or uv leaves: the files and the metadata in place, INSTALLER not yet written (uv
    # links a wheel's files, its .dist-info among them, and writes INSTALLER and the final RECORD last).
    site = next(Path(host.path("venv/lib")).glob("python3*/site-packages"))
    info = next(site.glob("provdemo-1.0.0.dist-info"))
    (info / "INSTALLER").unlink()
    (site / "provdemo" / "__init__.py").write_text("")
    assert pending(plan(manifest)) == {"pip:venv": ["interrupted", "package.provdemo"]}
    converge(manifest)
    assert installed_by(host, "provdemo") == installer
    assert "__version__" in (site / "provdemo" / "__init__.py").read_text()


@pytest.mark.parametrize("installer", INSTALLERS)
def test_a_local_wheel_installs_while_the_index_is_unreachable(tmp_path: Path, package_index: str,
                                                               wheelhouse: Path, installer: str) -> None:
    # An offline host: the wheel was downloaded into the root and its dependency is installed already.
    host = _local(tmp_path, installer)
    dead = "http://127.0.0.1:9/simple"  # the discard port: nothing listens
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "name": "dep", "venv": "venv", "packages": ["provdep==1.0.0"], "index_url": package_index,
         "installer": installer},
    ]})
    converge(manifest)
    wheel = Path(host.path("cache/wheels/provdemo-1.0.0-py3-none-any.whl"))
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes((wheelhouse / wheel.name).read_bytes())
    offline = write_manifest(tmp_path, host, {"resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "name": "demo", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": dead,
         "find_links": ["cache/wheels"], "installer": installer},
    ]}, name="offline.yaml")
    report = apply(offline)
    assert report.ok, report.failures
    assert installed_version(host, "provdemo") == "1.0.0"
    assert plan(offline).exit_code() == 0


def test_uv_comes_from_pips_own_index_when_the_resources_has_none(tmp_path: Path, package_index: str,
                                                                  torch_index: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The resource's index (like PyPI's torch index) serves no uv; the index pip is configured with does.
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "uv").exists()))
    monkeypatch.setenv("PIP_INDEX_URL", torch_index)
    host = TargetHost("local", "local", str(tmp_path / "root"))
    manifest = write_manifest(tmp_path, host, {"python": {"installer": "uv"}, "resources": [
        {"kind": "venv", "path": "venv"},
        {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": package_index},
    ]})
    converge(manifest)
    assert Path(host.path(TOOL_UV)).is_file()
    assert installed_by(host, "provdemo") == "uv"
