"""A host's custom nodes and packages, read through the agent's facts, as a ComfyUI-Manager snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from provisioner.agent_client import AgentClient
from provisioner.errors import ProvisionError
from provisioner.facts import Facts
from provisioner.manifest.model import Manifest
from provisioner.preflight import facts_request
from provisioner.snapshot.format import FileNode, GitNode, Snapshot
from provisioner.transport import open_transport


@dataclass
class Export:
    snapshot: Snapshot
    warnings: list[str] = field(default_factory=list)


def comfy_dir(manifest: Manifest) -> str:
    return manifest.comfyui.path if manifest.comfyui else "ComfyUI"


def host_facts(manifest: Manifest) -> Facts:
    """One read-only round trip: the facts, with ComfyUI's checkout and custom_nodes folder."""
    with open_transport(manifest.target) as transport:
        client = AgentClient(transport, python=manifest.target.python, timeout=manifest.target.connect_timeout * 6)
        request = {**facts_request(manifest), "comfy_dir": comfy_dir(manifest)}
        return Facts.model_validate(client.call("facts", request))


def snapshot_of(facts: Facts, manifest: Manifest) -> Export:
    comfy = facts.comfyui
    where = f"{manifest.target.connection}:{facts.root or manifest.target.root}"
    if comfy is None:
        raise ProvisionError(f"{where}: there is no {comfy_dir(manifest)} folder to snapshot; apply the manifest "
                             "first, or set comfyui.path to where ComfyUI is")
    warnings: list[str] = []
    if comfy.head is None:
        warnings.append(f"{comfy.path} is not a git checkout: the snapshot records no ComfyUI commit")
    git_nodes: list[GitNode] = []
    file_nodes: list[FileNode] = []
    cnr_nodes: dict[str, str] = {}
    for node in comfy.custom_nodes:
        if node.kind == "file":
            file_nodes.append(FileNode(node.name, node.disabled))
        elif node.kind == "cnr" and node.cnr_id and node.version:
            version = _strict_version(node.version)
            if node.disabled:  # as ComfyUI-Manager: the disabled state of a registry install is not restored
                warnings.append(f"custom_nodes/{node.name} is a disabled registry install: left out")
            elif version is None:
                warnings.append(f"custom_nodes/{node.name}: registry version {node.version!r} is not "
                                "MAJOR.MINOR.PATCH: left out")
            else:
                cnr_nodes[node.cnr_id] = version
        elif node.kind == "git" and node.head and node.origin:
            git_nodes.append(GitNode(node.origin, node.head, node.disabled))
        else:
            why = "has no remote to clone it from" if node.kind == "git" else "is not a git checkout"
            warnings.append(f"custom_nodes/{node.name} {why}: left out of the snapshot")
    if facts.venv is None:
        warnings.append("no venv found: the snapshot records no pip packages")
    return Export(Snapshot(comfyui=comfy.head, git_nodes=git_nodes, cnr_nodes=cnr_nodes, file_nodes=file_nodes,
                           pips=_pips(facts) if facts.venv else None), warnings)


def _strict_version(version: str) -> str | None:
    """ComfyUI-Manager's StrictVersion (manager_util.py): '2.5' -> '2.5.0', a fourth part after '-'."""
    parts = version.split(".")
    if not all(part.isdigit() for part in parts[:3]):
        return None
    numbers = [int(part) for part in parts[:3]] + [0] * (3 - len(parts[:3]))
    text = ".".join(str(n) for n in numbers)
    return f"{text}-{parts[3]}" if len(parts) > 3 else text


#: What `pip freeze` leaves out unless given --all (pip's freeze command, its `_dev_pkgs`).
_FREEZE_SKIPS = ("pip", "setuptools", "wheel", "distribute")


def _pips(facts: Facts) -> dict[str, str]:
    """`pip freeze` as ComfyUI-Manager keeps it: `name==version` -> "", a wheel installed from a URL name -> URL."""
    assert facts.venv is not None
    nunchaku = facts.venv.nunchaku
    pips: dict[str, str] = {}
    for name, version in facts.venv.packages.items():
        if name in _FREEZE_SKIPS:
            continue
        if name == "nunchaku" and nunchaku is not None and nunchaku.url:
            pips[name] = nunchaku.url
        else:
            pips[f"{name}=={version}"] = ""
    return pips
