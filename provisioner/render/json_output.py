"""The `--json` shapes every command prints: versioned, with zero counts present and structured changes.

A consumer reads `format_version` first (see format_version.py); new fields may appear within a version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import click
from pydantic import BaseModel, ConfigDict, Field

from provisioner.engine import ApplyReport, PlanReport
from provisioner.render.format_version import FORMAT_VERSION

#: Plan row statuses, as the agent reports them, and the count each one adds to.
PLAN_COUNT_OF_STATUS = {"create": "create", "change": "change", "drifted": "drift", "destroy": "destroy",
                        "kept": "kept", "unmanaged": "unmanaged", "ok": "ok", "error": "error"}
#: Apply outcomes, as the agent reports them, and the count each one adds to.
APPLY_COUNT_OF_OUTCOME = {"changed": "changed", "destroyed": "destroyed", "ok": "ok", "failed": "failed",
                          "skipped": "skipped"}


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OpenShape(BaseModel):
    """A row whose kind may add fields of its own (notes, bytes, after...): known fields are typed."""

    model_config = ConfigDict(extra="allow")


class Change(_Shape):
    """One difference between the manifest and the host, as fields rather than a rendered sentence."""

    kind: str
    key: str
    #: Which part of the resource differs (file, mode, package.torch, commit...).
    field: str
    #: What apply does about it: update, create, remove, discard, run, destroy...
    action: str
    old: Any = None
    new: Any = None
    reason: str = ""


class PlanCounts(_Shape):
    create: int = 0
    change: int = 0
    drift: int = 0
    destroy: int = 0
    #: Would go, but stays: large data without --prune, or a checkout holding local work.
    kept: int = 0
    unmanaged: int = 0
    ok: int = 0
    error: int = 0


class ApplyCounts(_Shape):
    changed: int = 0
    destroyed: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0


class Removal(_Shape):
    id: str
    kind: str
    key: str
    status: Literal["destroy", "kept"]
    bytes: int
    reason: str
    large: bool


class Unmanaged(_Shape):
    path: str
    kind: str
    bytes: int
    link: bool = False


class PlanResource(_OpenShape):
    id: str
    kind: str
    key: str
    status: str
    changes: list[Change]
    origin: str | None = None
    error: str | None = None
    notes: list[str] = Field(default_factory=list)


class ApplyResource(_OpenShape):
    id: str
    kind: str
    key: str
    status: str
    outcome: str
    changes: list[Change]
    seconds: float | None = None
    error: str | None = None


class PlanOutput(_Shape):
    format_version: Literal[1] = FORMAT_VERSION
    host: str
    root: str
    manifest: str
    seconds: float
    summary: PlanCounts
    resources: list[PlanResource]
    #: Every change of every resource that is not ok, in plan order.
    changes: list[Change]
    notes: list[str]
    #: What an earlier generation created and the manifest dropped (status destroy, or kept with why).
    destroy: list[Removal] = Field(default_factory=list)
    #: What custom_nodes and the model folders hold that the manifest does not know; never touched.
    unmanaged: list[Unmanaged] = Field(default_factory=list)


class ApplyOutput(_Shape):
    format_version: Literal[1] = FORMAT_VERSION
    host: str
    root: str
    manifest: str
    seconds: float
    ok: bool
    generation: int | None
    rollback_to: int | None
    summary: ApplyCounts
    resources: list[ApplyResource]
    #: The changes of the resources apply changed (or tried to), in apply order.
    changes: list[Change]
    handlers: list[dict[str, Any]]
    unconverged: list[PlanResource]
    pushed: list[str]
    failures: list[str]
    #: What every report of the stack repeats, e.g. a source build's unsupported-arch override.
    warnings: list[str] = Field(default_factory=list)


class HistoryOutput(_Shape):
    """`provision history --json`: the ledger's runs, newest first."""

    format_version: Literal[1] = FORMAT_VERSION
    count: int
    runs: list[dict[str, Any]]


class GenerationsOutput(_Shape):
    """`provision generations --json`: the generations recorded on the host, oldest first."""

    format_version: Literal[1] = FORMAT_VERSION
    count: int
    generations: list[dict[str, Any]]


def split_id(resource_id: str) -> tuple[str, str]:
    """`download:models/x` -> ("download", "models/x"); an id without a kind is its own key."""
    kind, sep, key = resource_id.partition(":")
    return (kind, key) if sep else ("", resource_id)


def changes_of(row: dict[str, Any]) -> list[Change]:
    kind, key = split_id(row["id"])
    return [Change(kind=kind, key=key, field=str(c.get("field", "")), action=str(c.get("action", "update")),
                   old=c.get("old"), new=c.get("new"), reason=str(c.get("reason", "")))
            for c in row.get("changes") or []]


#: Row fields that are not output as they are: the id's parts (set from it), host values (observed) and the digest
#: only saved plans use.
_INTERNAL_PLAN_FIELDS = ("id", "kind", "key", "status", "changes", "origin", "observed", "observed_digest")


def _plan_row(row: dict[str, Any], origin: str | None) -> PlanResource:
    kind, key = split_id(row["id"])
    extra = {k: v for k, v in row.items() if k not in _INTERNAL_PLAN_FIELDS}
    return PlanResource(id=row["id"], kind=kind, key=key, status=row["status"], changes=changes_of(row),
                        origin=origin, **extra)


def plan_counts(rows: list[dict[str, Any]]) -> PlanCounts:
    counts = PlanCounts()
    for row in rows:
        name = PLAN_COUNT_OF_STATUS.get(row["status"], "error")
        setattr(counts, name, getattr(counts, name) + 1)
    return counts


def apply_counts(rows: list[dict[str, Any]]) -> ApplyCounts:
    counts = ApplyCounts()
    for row in rows:
        name = APPLY_COUNT_OF_OUTCOME.get(row["outcome"], "failed")
        setattr(counts, name, getattr(counts, name) + 1)
    return counts


def plan_output(report: PlanReport) -> PlanOutput:
    rows = [_plan_row(r, report.origins.get(r["id"])) for r in report.resources]
    counts = plan_counts(report.resources)
    counts.unmanaged += len(report.unmanaged)
    return PlanOutput(host=report.host, root=report.root, manifest=report.manifest, seconds=report.seconds,
                      summary=counts, resources=rows,
                      changes=[c for r in report.pending for c in changes_of(r)], notes=report.notes,
                      destroy=[Removal(**r.as_json()) for r in report.removals],
                      unmanaged=[Unmanaged(**u.as_json()) for u in report.unmanaged])


def _apply_row(row: dict[str, Any]) -> ApplyResource:
    kind, key = split_id(row["id"])
    extra = {k: v for k, v in row.items() if k not in ("id", "kind", "key", "changes", "observed", "observed_digest")}
    extra.setdefault("status", "ok")
    return ApplyResource(id=row["id"], kind=kind, key=key, changes=changes_of(row), **extra)


def apply_output(report: ApplyReport) -> ApplyOutput:
    return ApplyOutput(
        host=report.host, root=report.root, manifest=report.manifest, seconds=report.seconds, ok=report.ok,
        generation=report.generation, rollback_to=report.rollback_to, summary=apply_counts(report.resources),
        resources=[_apply_row(r) for r in report.resources],
        changes=[c for r in report.resources if r["outcome"] != "ok" for c in changes_of(r)],
        handlers=report.handlers, unconverged=[_plan_row(r, None) for r in report.unconverged],
        pushed=report.pushed, failures=report.failures, warnings=report.warnings)


def history_output(runs: list[dict[str, Any]]) -> HistoryOutput:
    return HistoryOutput(count=len(runs), runs=runs)


def generations_output(records: list[dict[str, Any]]) -> GenerationsOutput:
    return GenerationsOutput(count=len(records), generations=records)


def versioned(data: dict[str, Any]) -> dict[str, Any]:
    """A command's own JSON document, with the format version in front."""
    return {"format_version": FORMAT_VERSION, **data}


def dumps(document: BaseModel | dict[str, Any]) -> str:
    data = document.model_dump(mode="json") if isinstance(document, BaseModel) else versioned(document)
    return json.dumps(data, indent=2, sort_keys=True)


def emit_json(document: BaseModel | dict[str, Any], mask: Callable[[str], str] = str) -> None:
    """Print one JSON document on stdout, secrets masked."""
    click.echo(mask(dumps(document)))
