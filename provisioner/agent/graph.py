"""Which steps of an apply wait for which: the dependency graph the scheduler runs in parallel.

Resources arrive in the order the controller expanded them (roles after the roles they depend on, each
role's resources in order). An edge makes a later resource L wait for an earlier one E when:

- their paths nest, either way round (dependencies.needs, checked both ways): a venv before its packages,
  a checkout before its requirements file and the plugins cloned inside it, a folder before its files. So
  two pip or requirements steps on one venv never run at once (pip is not safe against itself on one
  environment), and nothing nested is written by two steps at the same time;
- L reads a whole tree that E writes into (pip's local find-links folder holds a downloaded wheel);
- one of them is a command (it can touch anything): a command waits for everything before it, and
  everything after it waits for it;
- L is a service: it starts what the resources before it installed, so it waits for all of them.

`requires: [ids]` adds edges in any direction. Role `depends` only orders expansion (a role's resources
are listed after those of the roles it depends on); it adds no edge of its own, so ComfyUI's checkout
still clones while torch installs. Edges derived from the order cannot form a cycle; `requires` can,
and a cycle is refused before anything runs, naming the resources on it.
"""

from __future__ import annotations

from . import dependencies
from .protocol import ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Set


def _ordered_edge(later: Dict[str, Any], earlier: Dict[str, Any]) -> bool:
    if later["kind"] == "service":
        return True
    return dependencies.needs(later, earlier) or dependencies.needs(earlier, later)


def build(resources: List[Dict[str, Any]]) -> List[List[int]]:
    """For each resource (by index), the indexes of the resources it waits for, ascending."""
    index_of = {r["id"]: i for i, r in enumerate(resources)}
    waits: List[Set[int]] = [set() for _ in resources]
    for i, later in enumerate(resources):
        for j in range(i):
            if _ordered_edge(later, resources[j]):
                waits[i].add(j)
        for required in later.get("requires") or []:
            if required not in index_of:
                raise ResourceFailure("%s requires %s, which is not a resource of this manifest (known: %s)" % (
                    later["id"], required, ", ".join(sorted(index_of))))
            if index_of[required] == i:
                raise ResourceFailure("%s requires itself; remove it from its own requires" % later["id"])
            waits[i].add(index_of[required])
    _refuse_cycle(resources, waits)
    return [sorted(w) for w in waits]


def _refuse_cycle(resources: List[Dict[str, Any]], waits: List[Set[int]]) -> None:
    """Depth-first search; the first cycle found is reported with every resource on it."""
    white, grey, black = 0, 1, 2
    colour = [white] * len(resources)
    for start in range(len(resources)):
        if colour[start] != white:
            continue
        path: List[int] = [start]
        todo: List[List[int]] = [sorted(waits[start])]
        colour[start] = grey
        while path:
            if not todo[-1]:
                colour[path.pop()] = black
                todo.pop()
                continue
            nxt = todo[-1].pop(0)
            if colour[nxt] == grey:
                cycle = [*path[path.index(nxt):], nxt]
                names = " -> ".join(resources[k]["id"] for k in cycle)
                raise ResourceFailure("the resources wait for each other in a cycle: %s (each waits for the next); "
                                      "remove one of these requires" % names)
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                todo.append(sorted(waits[nxt]))
