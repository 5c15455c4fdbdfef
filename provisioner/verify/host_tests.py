"""pytest-testinfra tests of a provisioned host, written by `provision verify`.

This module is the same for every manifest: what it checks comes from verify_data.json beside it, so a
manifest value is only ever data here. Rerun it with plain pytest from its folder:

    cd DIR && python -m pytest

Each test is one aspect of one resource, named `resource-id aspect` in pytest's output and in JUnit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DATA_FILE = Path(__file__).with_name("verify_data.json")
DATA: dict[str, Any] = json.loads(DATA_FILE.read_text(encoding="utf-8"))

# testinfra's `host` fixture connects here: local://, docker://NAME or ssh://… with this folder's ssh_config.
testinfra_hosts = [DATA["host"]]

# Connects to the service's address from the host itself; host and port come as arguments, never as code.
CONNECT = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()"


@pytest.fixture(autouse=True, scope="module")
def reachable(host: Any) -> None:
    """A host that cannot be reached is an error of every test, not a failed check."""
    done = host.run("true")
    if done.rc != 0:
        raise RuntimeError(f"the host does not run commands: {done.stderr.strip()[-300:]}")


def cases(check: str) -> pytest.MarkDecorator:
    """The data file's cases of one kind, each a pytest parameter named by its id."""
    selected = [case for case in DATA["cases"] if case["check"] == check]
    return pytest.mark.parametrize("case", selected, ids=[case["id"] for case in selected])


def _mode(host: Any, path: str) -> str:
    return f"{host.file(path).mode:04o}"


@cases("directory")
def test_directory(host: Any, case: dict[str, Any]) -> None:
    assert host.file(case["data"]["path"]).is_directory, f"{case['data']['path']} is not a directory"


@cases("file")
def test_file(host: Any, case: dict[str, Any]) -> None:
    data = case["data"]
    target = host.file(data["path"])
    assert target.is_file, f"{data['path']} is missing"
    assert target.sha256sum == data["sha256"], f"{data['path']}: content differs from the manifest's"


@cases("mode")
def test_mode(host: Any, case: dict[str, Any]) -> None:
    data = case["data"]
    assert host.file(data["path"]).exists, f"{data['path']} is missing"
    mode = _mode(host, data["path"])
    assert mode == data["mode"], f"{data['path']} has mode {mode}; the manifest says {data['mode']}"


@cases("owner")
def test_owner(host: Any, case: dict[str, Any]) -> None:
    data = case["data"]
    target = host.file(data["path"])
    if data["owner"]:
        assert target.user == data["owner"], f"{data['path']} belongs to {target.user}, not {data['owner']}"
    if data["group"]:
        assert target.group == data["group"], f"{data['path']} has group {target.group}, not {data['group']}"


@cases("envfile")
def test_envfile(host: Any, case: dict[str, Any]) -> None:
    data = case["data"]
    target = host.file(data["path"])
    assert target.is_file, f"{data['path']} is missing"
    found: dict[str, str] = {}
    for line in target.content_string.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            found[key.strip()] = value
    differ = sorted(key for key, value in data["values"].items() if found.get(key) != value)
    assert not differ, f"{data['path']}: {', '.join(differ)} differ from the manifest's values"
    missing = [key for key in data["secret_keys"] if key not in found]
    assert not missing, f"secrets not set: {', '.join(missing)}"


@cases("venv")
def test_venv(host: Any, case: dict[str, Any]) -> None:
    path = case["data"]["path"]
    assert host.file(f"{path}/pyvenv.cfg").is_file, f"{path} is not a virtual environment"
    assert host.run("%s -c %s", f"{path}/bin/python", "pass").rc == 0, f"{path}/bin/python does not run"


@cases("package")
def test_package(host: Any, case: dict[str, Any]) -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    data = case["data"]
    installed = {canonicalize_name(name): info["version"]
                 for name, info in host.pip.get_packages(pip_path=f"{data['venv']}/bin/pip").items()}
    version = installed.get(data["name"])
    assert version is not None, f"{data['name']} is not installed in {data['venv']}"
    assert SpecifierSet(data["specifier"]).contains(version, prereleases=True), (
        f"{data['name']} {version} is installed; the manifest pins {data['specifier']}")


@cases("git_commit")
def test_git_commit(host: Any, case: dict[str, Any]) -> None:
    data = case["data"]
    path, ref = data["path"], data["ref"]
    git = "git -c safe.directory=%s -C %s "
    head = host.run(git + "rev-parse --verify -q HEAD^{commit}", path, path)
    assert head.rc == 0, f"{path} is not a git checkout"
    # The ref as the last apply fetched it: a tag, the remote branch, else a commit name.
    wanted = ""
    for name in (f"refs/tags/{ref}^{{commit}}", f"refs/remotes/origin/{ref}^{{commit}}", f"{ref}^{{commit}}"):
        found = host.run(git + "rev-parse --verify -q %s", path, path, name)
        if found.rc == 0:
            wanted = found.stdout.strip()
            break
    assert wanted, f"{ref} is not known in {path}"
    assert head.stdout.strip() == wanted, f"{path} is at {head.stdout.strip()[:12]}, not {ref} ({wanted[:12]})"


@cases("creates")
def test_creates(host: Any, case: dict[str, Any]) -> None:
    assert host.file(case["data"]["path"]).exists, f"{case['data']['path']} is missing"


@cases("model_file")
def test_model_file(host: Any, case: dict[str, Any]) -> None:
    data = case["data"]
    target = host.file(data["path"])
    assert target.is_file, f"{data['path']} is missing"
    if data["size"] is not None:
        assert target.size == data["size"], f"{data['path']} has {target.size} bytes, not {data['size']}"
    if data["sha256"]:
        assert target.sha256sum == data["sha256"], f"{data['path']}: sha256 differs"


def _process_running(host: Any, record_path: str) -> str | None:
    """None when the process manager's record names a live process with its recorded command line."""
    record_file = host.file(record_path)
    if not record_file.is_file:
        return f"no service record at {record_path}"
    record = json.loads(record_file.content_string)
    if record.get("ready") is False:
        return f"process {record.get('pid')} never became ready"
    cmdline = host.file(f"/proc/{int(record['pid'])}/cmdline")
    if not cmdline.exists:
        return f"process {record['pid']} is not running"
    now = [part.decode("utf-8", "replace") for part in cmdline.content.split(b"\0") if part]
    if now != record.get("cmdline"):
        return f"PID {record['pid']} is another process now"
    return None


@cases("service")
def test_service(host: Any, case: dict[str, Any]) -> None:
    data = case["data"]
    manager = data["manager"]
    if manager == "auto":
        manager = "systemd" if host.file("/run/systemd/system").is_directory else "process"
    if manager == "systemd":
        running, why = host.service(data["unit"]).is_running, f"{data['unit']} is not active"
    else:
        problem = _process_running(host, data["record"])
        running, why = problem is None, problem or f"service {data['name']} is running"
    if data["running"]:
        assert running, why
    else:
        assert not running, f"service {data['name']} should be stopped but is running"


@cases("port")
def test_port(host: Any, case: dict[str, Any]) -> None:
    data = case["data"]
    done = host.run("%s -c %s %s %s", data["python"], CONNECT, data["host"], str(data["port"]))
    assert done.rc == 0, f"nothing listens on {data['host']}:{data['port']}: {done.stderr.strip()[-200:]}"
