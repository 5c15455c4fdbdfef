"""The folder `provision verify` runs: the static test module, its JSON data, pytest.ini, an ssh_config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlencode

from provisioner.errors import ProvisionError
from provisioner.manifest.model import Target
from provisioner.transport.ssh_connect import parse_address
from provisioner.verify.cases import VerifyCase

TEST_MODULE = "test_provisioned_host.py"
DATA_FILE = "verify_data.json"
SSH_CONFIG = "ssh_config"
FORMAT_VERSION = 1

# Only the options a plain `pytest` run in the folder needs; the user's own pytest configuration and the
# project's (when verify runs from inside a checkout) stay out of it.
_PYTEST_INI = """\
[pytest]
addopts = -p no:cacheprovider
"""


class VerifyError(ProvisionError):
    """The manifest's target cannot be verified this way."""


@dataclass(frozen=True)
class SshLogin:
    """How ssh reaches the target, pinned to provision's known_hosts."""

    known_hosts: Path
    identity_file: Path | None
    connect_timeout: float


def host_spec(target: Target, folder: Path, login: SshLogin | None) -> str:
    """The testinfra host spec for the manifest's target (ssh:// uses the folder's ssh_config)."""
    connection = target.connection
    sudo = "?sudo=true" if target.become else ""
    if target.become and target.become_password_env:
        raise VerifyError(f"{connection}: target.become_password_env is set, but verify runs its tests through "
                          "`sudo` without a password (a password would have to reach sudo on a terminal); allow "
                          "the user NOPASSWD for the checks, or verify as a user who can read the root")
    if connection == "local":
        return "local://" + sudo
    if connection.startswith("docker://"):
        name = connection.removeprefix("docker://")
        as_user = f"{target.user}@" if target.user else ""
        return f"docker://{as_user}{name}{sudo}"
    if connection.startswith("ssh://"):
        assert login is not None
        address = parse_address(connection)
        user = address.user or target.user
        port = address.port or target.port
        where = f"{user + '@' if user else ''}{address.host}{':' + str(port) if port else ''}"
        # controlpersist=0: no master connection outlives the run.
        query = {"ssh_config": str(folder / SSH_CONFIG), "controlpersist": "0",
                 "timeout": str(max(1, round(login.connect_timeout))), **({"sudo": "true"} if target.become else {})}
        return f"ssh://{where}?{urlencode(query)}"
    raise VerifyError(f"{connection}: verify tests a running host (local, ssh:// or docker://); a "
                      "docker-image:// target is a build, so verify the container you run from the image instead")


def ssh_config(login: SshLogin) -> str:
    """OpenSSH options that keep host keys strict: only the pinned known_hosts, never a new key, no prompt."""
    lines = [
        "Host *",
        "  StrictHostKeyChecking yes",
        f"  UserKnownHostsFile {_config_path(login.known_hosts)}",
        "  GlobalKnownHostsFile /dev/null",
        "  UpdateHostKeys no",
        "  BatchMode yes",
        "  LogLevel ERROR",
    ]
    if login.identity_file is not None:
        lines += [f"  IdentityFile {_config_path(login.identity_file)}", "  IdentitiesOnly yes"]
    user_config = Path("~/.ssh/config").expanduser()
    if user_config.is_file():
        # Aliases, ProxyJump and the like still come from the user's config; the options above win.
        lines.append(f"Include {_config_path(user_config)}")
    return "\n".join(lines) + "\n"


def _config_path(path: Path) -> str:
    text = str(path.expanduser().resolve())
    if any(ch in text for ch in '"\n\r'):
        raise VerifyError(f"{text}: a path with quotes or line breaks cannot be written into an ssh_config")
    return f'"{text}"'


def write_suite(folder: Path, host: str, root: str, manifest: str, cases: list[VerifyCase],
                login: SshLogin | None) -> Path:
    """Write the test folder; returns the test module's path."""
    folder.mkdir(parents=True, exist_ok=True)
    package = resources.files("provisioner.verify")
    (folder / TEST_MODULE).write_text(package.joinpath("host_tests.py").read_text(encoding="utf-8"),
                                      encoding="utf-8")
    (folder / "conftest.py").write_text(package.joinpath("host_conftest.py").read_text(encoding="utf-8"),
                                        encoding="utf-8")
    (folder / "pytest.ini").write_text(_PYTEST_INI, encoding="utf-8")
    if login is not None:
        (folder / SSH_CONFIG).write_text(ssh_config(login), encoding="utf-8")
    data = {"format_version": FORMAT_VERSION, "manifest": manifest, "host": host, "root": root,
            "cases": [case.as_json() for case in cases]}
    (folder / DATA_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder / TEST_MODULE
