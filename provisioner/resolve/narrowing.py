"""Narrow a list of candidate combinations step by step, and explain every step that rules them all out.

Each step is one constraint (a manifest setting or a host fact). When a step would leave nothing, it
is reported and then skipped, so later, independent problems are reported in the same run. A fix
names the values of the failing setting that would work, and the values of every earlier setting
that would make the failing one satisfiable; where no single setting can, it names a combination.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from provisioner.catalog import parse_version
from provisioner.resolve.result import Violation

C = TypeVar("C")


@dataclass(frozen=True)
class Step(Generic[C]):
    name: str
    ok: Callable[[C], bool]
    reason: Callable[[list[C]], str]
    field: str = "host"
    settable: bool = False
    label: Callable[[C], str] | None = None
    remedy: Callable[[list[C]], str | None] | None = None


def narrow(candidates: list[C], steps: Sequence[Step[C]]) -> tuple[list[C], list[Violation]]:
    """The candidates passing every step, or [] with one violation per step that nothing passes."""
    current = candidates
    failed: list[tuple[Step[C], list[C]]] = []
    for step in steps:
        kept = [c for c in current if step.ok(c)]
        if kept:
            current = kept
        else:
            failed.append((step, current))
    if not failed:
        return current, []
    failed_names = {step.name for step, _ in failed}
    violations = [_explain(step, reached, candidates, steps, failed_names) for step, reached in failed]
    return [], violations


def _explain(
    step: Step[C],
    reached: list[C],
    everything: list[C],
    steps: Sequence[Step[C]],
    failed: set[str],
) -> Violation:
    fixes: list[str] = []
    position = steps.index(step)
    if step.settable and step.label is not None:
        later = [s for s in steps[position + 1 :] if s.name not in failed]
        workable = [c for c in reached if all(s.ok(c) for s in later)] or reached
        values = _labels(workable, step.label)
        if values:
            fixes.append(f"set {step.field} to {_choices(values)}")
    if step.remedy is not None:
        remedy = step.remedy(reached)
        if remedy:
            fixes.append(remedy)
    single = len(fixes)
    for earlier in steps[:position]:
        if not earlier.settable or earlier.label is None or earlier.name in failed:
            continue
        others = [s for s in steps if s is not earlier and s is not step and s.name not in failed]
        alternatives = [c for c in everything if step.ok(c) and all(s.ok(c) for s in others)]
        if not alternatives:
            prior = [s for s in steps[:position] if s is not earlier and s.name not in failed]
            alternatives = [c for c in everything if step.ok(c) and all(s.ok(c) for s in prior)]
        values = _labels(alternatives, earlier.label)
        if values:
            fixes.append(f"set {earlier.field} to {_choices(values)}")
    if len(fixes) == single:
        together = _combination(step, everything, steps, failed)
        if together:
            fixes.append(together)
    fix = "; or ".join(fixes) if fixes else "no combination in the catalog satisfies this; see the reason"
    return Violation(field=step.field, reason=step.reason(reached), fix=fix[0].upper() + fix[1:])


def _combination(step: Step[C], everything: list[C], steps: Sequence[Step[C]], failed: set[str]) -> str | None:
    """When no one setting can fix `step`, the fewest settings to change together (newest values first)."""
    position = steps.index(step)
    changeable = [s for s in steps[:position] if s.settable and s.label is not None and s.name not in failed]
    if len(changeable) < 2:
        return None
    held = [s for s in steps if s is not step and s not in changeable and s.name not in failed]
    working = [c for c in everything if step.ok(c) and all(s.ok(c) for s in held)]
    if not working:
        return None

    def cost(c: C) -> tuple[object, ...]:
        changed = [s for s in changeable if not s.ok(c)]
        return (-len(changed), *(_version_order(s.label(c)) for s in changeable if s.label is not None))

    best = max(working, key=cost)
    changes = [f"{s.field} to {s.label(best)}" for s in changeable if s.label is not None and not s.ok(best)]
    if len(changes) < 2:
        return None
    return "no single setting fixes this, but together they do: set " + " and ".join(changes)


def _labels(candidates: list[C], label: Callable[[C], str]) -> list[str]:
    values = {label(c) for c in candidates}
    return sorted(values, key=_version_order, reverse=True)


def _version_order(text: str) -> tuple[int, object]:
    version = parse_version(text)
    return (1, version) if version is not None else (0, text)


def _choices(values: list[str]) -> str:
    if len(values) == 1:
        return values[0]
    shown = values[:6]
    more = f", ... ({len(values) - len(shown)} more)" if len(values) > len(shown) else ""
    return f"{shown[0]} (or {', '.join(shown[1:])}{more})"
