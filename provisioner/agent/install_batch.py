"""Steps that install into one venv share one installer run: torch, ComfyUI's requirements and each
plugin's are resolved, downloaded and unpacked together instead of one run after another.

Each pip or requirements resource stays its own step in the plan, the progress and the report; only its
install is shared. When the scheduler starts such a step, the other steps on the same venv that are
ready by then (their checkouts cloned, their downloads done) and have something to install join it
(`companions`). Each member first does its own preparation (removing unrelated or foreign packages),
then one run installs the union of their requirements and constraints, then each records what its own
apply records (a requirements file's digest, the hashes uv verified).

One run finds one solution for all the sets, where one run per set made each later run take what the
earlier ones had installed as given; and it pays resolution, downloads and unpacking once. On a cold
host the two requirements files cost about 20 s each after torch's own run.

Indexes: in a shared run any member's package may come from any member's index. So members share a run
only when they name the same indexes, except a member whose every pin names a build no other index
serves (an exact version with a local label, torch==2.11.0+cu130, or a direct URL): its index joins the
run as an extra one. torch from the CUDA index thus shares the run with requirements from the
configured index; a torch pinned without a label (the aarch64 CPU wheels) installs in its own run, as
do steps with --no-deps and steps that only remove packages.

If the shared run fails, each member is installed on its own, in order, so the failure is reported by
the step that caused it and the others still converge.
"""

from __future__ import annotations

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

INSTALL_KINDS = ("pip", "requirements")


def venv_key(resource: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """(venv, installer) for a step that may share its install run; None for one that runs alone."""
    spec = resource["spec"]
    if resource["kind"] not in INSTALL_KINDS or spec.get("state") == "absent" or spec.get("no_deps"):
        return None
    if resource["kind"] == "pip" and not spec.get("packages"):
        return None  # it only removes packages
    return spec["venv"], str(spec.get("installer") or "pip")


def _index_of(spec: Dict[str, Any]) -> Tuple[Optional[str], Tuple[str, ...]]:
    return spec.get("index_url"), tuple(spec.get("extra_index_urls") or [])


def _own_index_only(resource: Dict[str, Any]) -> bool:
    if resource["kind"] != "pip":
        return False
    from .kinds.pip import own_index_only

    return own_index_only(resource["spec"])


def may_share(members: List[Dict[str, Any]]) -> bool:
    """Whether these steps may install in one run: one venv and installer, and one set of indexes among
    those whose packages another index could also serve."""
    keys = {venv_key(m) for m in members}
    if len(keys) != 1 or None in keys:
        return False
    indexes = {_index_of(m["spec"]) for m in members if not _own_index_only(m)}
    return len(indexes) <= 1


def companions(first: int, resources: List[Dict[str, Any]], candidates: List[int],
               ready: Callable[[int, List[int]], bool], works: Callable[[int], bool],
               idle: Callable[[int], bool]) -> List[int]:
    """The candidates (in order) that join `first`'s run. `ready(index, members)`: it waits for nothing but
    what is done or in the run; `works(index)`: it has something to do; `idle(index)`: its probe found
    nothing to do and nothing blocks it (it may still be re-probed, as every step on a venv this apply
    made or changed is).

    A step with work joins when it may share the run with the others that have work. An idle install
    step on the same venv joins too, as a passenger: its place in the order (between torch and the
    requirements, like the step that only removes PyPI's unrelated nunchaku) would otherwise hold back
    everything after it; it is re-probed after the shared run and applied then if that gave it work."""
    if venv_key(resources[first]) is None:
        return []
    venv = resources[first]["spec"]["venv"]
    members, working = [first], [resources[first]]
    for index in candidates:
        resource = resources[index]
        if (index == first or resource["kind"] not in INSTALL_KINDS or resource["spec"].get("venv") != venv
                or not ready(index, members)):
            continue
        if works(index) and venv_key(resource) is not None:
            if may_share([*working, resource]):
                members.append(index)
                working.append(resource)
        elif idle(index):
            members.append(index)
    return members[1:] if len(working) > 1 else []
