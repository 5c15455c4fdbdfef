"""Human-readable plan and apply reports; secrets are masked in every line.

Each kind of row has its own sign and colour (+ create, ~ change, ! drift, - destroy, ? unmanaged), so it
reads the same without colour; in a diff the old value is red and the new one green.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click

from provisioner.agent.fsutil import human_size
from provisioner.engine import ApplyReport, PlanReport

STATUS_LABEL = {
    "ok": ("  ok      ", "green"),
    "create": ("+ create  ", "green"),
    "change": ("~ change  ", "yellow"),
    "drifted": ("! drifted ", "magenta"),
    "destroy": ("- destroy ", "red"),
    "unmanaged": ("? unmanaged ", "cyan"),
    "kept": ("  kept    ", "cyan"),
    "error": ("x error   ", "red"),
}
OUTCOME_LABEL = {
    "changed": ("~ changed ", "yellow"),
    "ok": ("  ok      ", "green"),
    "failed": ("x failed  ", "red"),
    "skipped": ("- skipped ", "white"),
}


class Masker:
    """Replaces every known secret value in text before it is shown or stored."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


def _old(value: Any) -> str:
    return click.style(_value(value), fg="red")


def _new(value: Any) -> str:
    return click.style(_value(value), fg="green")


def _change_lines(change: dict[str, Any]) -> list[str]:
    reason, _, detail = str(change["reason"]).partition("\n")
    arrow = f"{_old(change['old'])} → {_new(change['new'])}"
    if change["action"] == "run":
        arrow = _new(change["new"])
    elif change["action"] == "discard":
        arrow = f"discard {_old(change['old'])}"
    elif change["action"] in ("remove", "destroy"):
        arrow = f"remove {_old(change['old'])}"
    lines = [f"            {change['field']}: {arrow}  ({reason})"]
    lines += [f"              {line}" for line in detail.splitlines()]
    return lines


def render_plan(report: PlanReport, mask: Masker, show_ok: bool = True) -> str:
    lines = [f"Plan for {report.manifest} on {report.host} (root {report.root})", ""]
    if report.notes:
        lines += [f"  note: {note}" for note in report.notes] + [""]
    for resource in report.resources:
        if resource["status"] == "ok" and not show_ok:
            continue
        label, color = STATUS_LABEL[resource["status"]]
        lines.append(click.style(label, fg=color) + resource["id"])
        for change in resource["changes"]:
            lines += _change_lines(change)
        if resource.get("error"):
            lines += [f"            {line}" for line in resource["error"].splitlines()]
        lines += [f"            note: {note}" for note in resource.get("notes") or []]
        if resource["status"] == "kept":
            lines.append(f"            {resource.get('reason', '')}")
    for entry in report.unmanaged:
        what = "link" if entry.link else human_size(entry.bytes)
        lines.append(click.style("? unmanaged ", fg="cyan") + f"{entry.kind} {entry.path} ({what})")
    lines += ["", plan_summary(report)]
    if not report.pending:
        lines.append("No changes: the host matches the manifest.")
    return mask("\n".join(lines))


def plan_summary(report: PlanReport) -> str:
    """The plan's counts line (all that --quiet prints of a plan)."""
    counts = {status: sum(1 for r in report.resources if r["status"] == status) for status in STATUS_LABEL}
    parts = [f"{counts['create']} to create", f"{counts['change']} to change", f"{counts['drifted']} drifted"]
    destroy_bytes = sum(r.bytes for r in report.removals if r.status == "destroy")
    parts += [f"{counts['destroy']} to destroy ({human_size(destroy_bytes)})"] if counts["destroy"] else []
    parts.append(f"{counts['ok']} ok")
    parts += [f"{counts['kept']} kept"] if counts["kept"] else []
    unmanaged = counts["unmanaged"] + len(report.unmanaged)
    parts += [f"{unmanaged} unmanaged"] if unmanaged else []
    parts += [f"{counts['error']} errors"] if counts["error"] else []
    return "Plan: " + ", ".join(parts) + f" ({report.seconds:.2f}s)."


def render_apply(report: ApplyReport, mask: Masker) -> str:
    lines = [f"Apply of {report.manifest} on {report.host} (root {report.root})", ""]
    for resource in report.resources:
        outcome = resource["outcome"]
        if outcome == "ok":
            continue
        label, color = OUTCOME_LABEL[outcome]
        seconds = f" ({resource['seconds']:.2f}s)" if "seconds" in resource else ""
        lines.append(click.style(label, fg=color) + resource["id"] + seconds)
        for change in resource["changes"]:
            lines += _change_lines(change)
        if resource.get("error"):
            lines += [f"            {line}" for line in resource["error"].splitlines()]
        if outcome == "skipped" and resource.get("after"):
            lines.append(f"            not applied: it needs {resource['after']}, which did not converge")
    for handler in report.handlers:
        state = "failed" if handler.get("error") else "ran"
        lines.append(f"  handler {handler['name']} {state}")
        if handler.get("error"):
            lines += [f"            {line}" for line in handler["error"].splitlines()]
    if not any(r["outcome"] in ("changed", "failed") for r in report.resources):
        lines = lines[:2]
    lines += [click.style(f"  warning: {warning}", fg="yellow") for warning in report.warnings]
    lines += ["", apply_summary(report)]
    if report.failures:
        lines.append(click.style(f"Failed: {', '.join(report.failures)}", fg="red"))
    if report.unconverged:
        lines.append(click.style("Not converged after apply:", fg="red"))
        for resource in report.unconverged:
            lines.append(f"  {resource['id']}")
            for change in resource["changes"]:
                lines += _change_lines(change)
    elif not report.failed:
        lines.append("Converged: a re-probe finds no differences.")
    return mask("\n".join(lines))


def apply_summary(report: ApplyReport) -> str:
    """The apply's counts line."""
    count = {outcome: sum(1 for r in report.resources if r["outcome"] == outcome) for outcome in OUTCOME_LABEL}
    summary = f"Applied: {count['changed']} changed, {count['ok']} ok"
    if count["failed"] or count["skipped"]:
        summary += f", {count['failed']} failed, {count['skipped']} skipped"
    if report.generation:
        summary += f"; recorded generation {report.generation}"
    return summary + f" ({report.seconds:.2f}s)."


def render_apply_quiet(report: ApplyReport, mask: Masker) -> str:
    """--quiet: the counts line, and what failed or did not converge (those are errors)."""
    lines = [apply_summary(report)]
    if report.failures:
        lines.append(click.style(f"Failed: {', '.join(report.failures)}", fg="red"))
    if report.unconverged:
        lines.append(click.style(f"Not converged: {', '.join(r['id'] for r in report.unconverged)}", fg="red"))
    return mask("\n".join(lines))
