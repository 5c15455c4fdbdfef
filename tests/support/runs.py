"""Run plan/apply through the engine and read the results compactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner.engine import ApplyReport, HostSession, PlanReport, RunOptions
from provisioner.manifest import load_manifest


def plan(path: Path, environ: dict[str, str] | None = None, **options: Any) -> PlanReport:
    return HostSession(load_manifest(path), RunOptions(**options), environ=environ).plan()


def apply(path: Path, environ: dict[str, str] | None = None, **options: Any) -> ApplyReport:
    return HostSession(load_manifest(path), RunOptions(**options), environ=environ).apply()


def statuses(report: PlanReport) -> dict[str, str]:
    return {r["id"]: r["status"] for r in report.resources}


def pending(report: PlanReport) -> dict[str, list[str]]:
    """Resource id -> changed fields, for every resource that is not ok."""
    return {r["id"]: [c["field"] for c in r["changes"]] for r in report.resources if r["status"] != "ok"}


def changed(report: ApplyReport) -> list[str]:
    return [r["id"] for r in report.resources if r["outcome"] == "changed"]


def converge(path: Path, environ: dict[str, str] | None = None) -> ApplyReport:
    """Apply, assert success, and assert that a second apply changes nothing."""
    first = apply(path, environ)
    assert first.ok, first.as_json()
    second = apply(path, environ)
    assert second.ok and changed(second) == [], second.as_json()
    assert second.generation is None
    assert plan(path, environ).exit_code() == 0
    return first
