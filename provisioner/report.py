"""Human-readable plan and apply reports; secrets are masked in every line."""

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


def _change_lines(change: dict[str, Any]) -> list[str]:
    reason, _, detail = str(change["reason"]).partition("\n")
    arrow = f"{_value(change['old'])} → {_value(change['new'])}"
    if change["action"] == "run":
        arrow = _value(change["new"])
    elif change["action"] == "discard":
        arrow = f"discard {_value(change['old'])}"
    elif change["action"] in ("remove", "destroy"):
        arrow = f"remove {_value(change['old'])}"
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
        lines.append(click.style("? unmanaged ", fg="blue") + f"{entry.kind} {entry.path} ({what})")
    counts = {status: sum(1 for r in report.resources if r["status"] == status) for status in STATUS_LABEL}
    destroy_bytes = sum(r.bytes for r in report.removals if r.status == "destroy")
    lines += ["", (
        f"Plan: {counts['create']} to create, {counts['change']} to change, {counts['drifted']} drifted, "
        + (f"{counts['destroy']} to destroy ({human_size(destroy_bytes)}), " if counts["destroy"] else "")
        + f"{counts['ok']} ok"
        + (f", {counts['kept']} kept" if counts["kept"] else "")
        + (f", {len(report.unmanaged)} unmanaged" if report.unmanaged else "")
        + (f", {counts['error']} errors" if counts["error"] else "")
        + f" ({report.seconds:.2f}s)."
    )]
    if not report.pending:
        lines.append("No changes: the host matches the manifest.")
    return mask("\n".join(lines))


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
    changed = sum(1 for r in report.resources if r["outcome"] == "changed")
    ok = sum(1 for r in report.resources if r["outcome"] == "ok")
    failed = sum(1 for r in report.resources if r["outcome"] == "failed")
    skipped = sum(1 for r in report.resources if r["outcome"] == "skipped")
    if changed == 0 and not failed:
        lines = lines[:2]
    summary = f"Applied: {changed} changed, {ok} ok"
    if failed or skipped:
        summary += f", {failed} failed, {skipped} skipped"
    if report.generation:
        summary += f"; recorded generation {report.generation}"
    lines += ["", summary + f" ({report.seconds:.2f}s)."]
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
