"""What to test on the host, one case per resource aspect, from the expanded resources."""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement

from provisioner.agent.kinds.service import ready_url
from provisioner.expand import HostResource

#: Test functions of the shipped module, by the case's `check`.
CHECKS = (
    "directory", "file", "mode", "owner", "envfile", "venv", "package", "git_commit", "creates",
    "model_file", "service", "port",
)


@dataclass(frozen=True)
class VerifyCase:
    """One assertion about the host: `id` names it in pytest and JUnit, `data` carries the expected values."""

    id: str
    check: str
    resource: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def cases_for(resources: list[HostResource], root: str, python: str, deep: bool = False) -> list[VerifyCase]:
    """Every case the resources call for; `root` is the host's absolute target root."""
    cases: list[VerifyCase] = []
    for resource in resources:
        builder = _BUILDERS.get(resource.kind)
        if builder is not None:
            cases.extend(builder(resource, _Paths(root), python, deep))
    return cases


class _Paths:
    def __init__(self, root: str) -> None:
        self.root = root

    def __call__(self, relative: str) -> str:
        return posixpath.normpath(posixpath.join(self.root, relative))


def _ownership(resource: HostResource, path: str) -> list[VerifyCase]:
    spec = resource.spec
    cases = []
    if spec.get("mode"):
        cases.append(VerifyCase(f"{resource.id} mode", "mode", resource.id, {"path": path, "mode": spec["mode"]}))
    if spec.get("owner") or spec.get("group"):
        cases.append(VerifyCase(f"{resource.id} owner", "owner", resource.id,
                                {"path": path, "owner": spec.get("owner"), "group": spec.get("group")}))
    return cases


def _directory(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    path = at(resource.spec["path"])
    return [VerifyCase(resource.id, "directory", resource.id, {"path": path}), *_ownership(resource, path)]


def _file(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    path = at(resource.spec["path"])
    # The digest, not the content: a template's rendered text stays out of the data file.
    sha256 = hashlib.sha256(resource.spec["content"].encode("utf-8")).hexdigest()
    return [VerifyCase(f"{resource.id} content", "file", resource.id, {"path": path, "sha256": sha256}),
            *_ownership(resource, path)]


def _envfile(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    spec = resource.spec
    path = at(spec["path"])
    # Secrets are checked by key only: their values never reach the data file.
    secret_keys = sorted(set(spec.get("secret_values") or {}) | set(spec.get("unset_secrets") or []))
    data = {"path": path, "values": dict(spec.get("values") or {}), "secret_keys": secret_keys}
    return [VerifyCase(f"{resource.id} values", "envfile", resource.id, data), *_ownership(resource, path)]


def _venv(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    return [VerifyCase(resource.id, "venv", resource.id, {"path": at(resource.spec["path"])})]


_NAME = re.compile(r"[-_.]+")


def _pip(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    venv = at(resource.spec["venv"])
    cases = []
    for package in resource.spec.get("packages") or []:
        text = package["requirement"] if isinstance(package, dict) else package
        try:
            requirement = Requirement(text)
        except InvalidRequirement:  # validated by the manifest model; kept as a plain name otherwise
            continue
        name = _NAME.sub("-", requirement.name).lower()
        cases.append(VerifyCase(f"{resource.id} {name}{requirement.specifier}", "package", resource.id,
                                {"venv": venv, "name": name, "specifier": str(requirement.specifier)}))
    return cases


def _git(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    spec = resource.spec
    data = {"path": at(spec["path"]), "ref": spec.get("ref") or "HEAD"}
    return [VerifyCase(f"{resource.id} at {data['ref']}", "git_commit", resource.id, data)]


def _command(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    creates = resource.spec.get("creates")
    if not creates:
        return []  # an `unless` guard is the command's own test; nothing durable to look at
    return [VerifyCase(f"{resource.id} created {creates}", "creates", resource.id, {"path": at(creates)})]


def _download(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    spec = resource.spec
    data = {"path": at(spec["path"]), "size": spec.get("size"), "sha256": spec.get("sha256") if deep else None}
    return [VerifyCase(f"{resource.id} present", "model_file", resource.id, data)]


def _service(resource: HostResource, at: _Paths, python: str, deep: bool) -> list[VerifyCase]:
    spec = resource.spec
    running = spec.get("state", "running") == "running"
    data = {"name": spec["name"], "manager": spec.get("manager") or "auto", "running": running,
            "record": at(f".provision/services/{spec['name']}.json"), "unit": f"provision-{spec['name']}.service"}
    cases = [VerifyCase(f"{resource.id} {'running' if running else 'stopped'}", "service", resource.id, data)]
    ready = spec.get("ready")
    if running and ready:
        # Where the agent's readiness probe connects: a wildcard listen address is reached on loopback.
        url = urlsplit(ready_url(ready))
        cases.append(VerifyCase(f"{resource.id} listening on {url.port}", "port", resource.id,
                                {"host": url.hostname, "port": url.port, "python": python}))
    return cases


_BUILDERS = {
    "directory": _directory, "file": _file, "envfile": _envfile, "venv": _venv, "pip": _pip, "git": _git,
    "command": _command, "download": _download, "service": _service,
}
