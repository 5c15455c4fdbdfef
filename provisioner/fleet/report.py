"""Fleet reports: the hosts × areas drift table (text, JSON, Markdown; HTML in report_html) and the apply summary."""

from __future__ import annotations

from typing import Any

from provisioner.fleet.areas import AREA_TITLES, AREAS
from provisioner.fleet.results import FleetApplyResult, FleetPlanResult, HostPlan
from provisioner.render.fleet_table import render_table

PLAN_STATUSES = ("ok", "drift", "error", "unreachable")


def area_cell(plan: HostPlan, area: str) -> dict[str, Any]:
    """One cell: its state (ok, drift, error, absent, unknown), a short text, and what is not ok behind it."""
    if plan.report is None:
        return {"state": "unknown", "text": "?", "pending": []}
    if area == "gpu":
        problems = plan.gpu.get("problems") or []
        return {"state": "error" if problems else "ok", "text": plan.gpu.get("text", "?"),
                "pending": [{"id": "gpu", "status": "error", "reason": p} for p in problems]}
    rows = plan.areas.get(area) or []
    if not rows:
        return {"state": "absent", "text": "·", "pending": []}
    pending = [_pending(row) for row in rows if row["status"] not in ("ok", "kept")]
    if any(row["status"] == "error" for row in rows):
        return {"state": "error", "text": f"error ({len(pending)})", "pending": pending}
    if pending:
        return {"state": "drift", "text": f"~{len(pending)}", "pending": pending}
    return {"state": "ok", "text": "ok", "pending": []}


def _pending(row: dict[str, Any]) -> dict[str, Any]:
    changes = [{"field": c.get("field"), "action": c.get("action"), "old": c.get("old"), "new": c.get("new"),
                "reason": str(c.get("reason", "")).split("\n", 1)[0]} for c in row.get("changes") or []]
    out: dict[str, Any] = {"id": row["id"], "status": row["status"], "changes": changes}
    if row.get("error"):
        out["reason"] = row["error"]
    return out


def plan_json(result: FleetPlanResult) -> dict[str, Any]:
    counts = dict.fromkeys(PLAN_STATUSES, 0)
    hosts = []
    for plan in result.hosts:
        counts[plan.status] = counts.get(plan.status, 0) + 1
        hosts.append({"host": plan.name, "status": plan.status, "manifest": plan.manifest,
                      "connection": plan.connection, "error": plan.error, "seconds": plan.seconds,
                      "gpu": plan.gpu or None, "areas": {area: area_cell(plan, area) for area in AREAS}})
    return {"run_id": result.run_id, "inventory": result.inventory, "seconds": result.seconds,
            "exit_code": result.exit_code(), "summary": counts, "areas": list(AREAS), "hosts": hosts}


def plan_headline(result: FleetPlanResult) -> str:
    counts = plan_json(result)["summary"]
    parts = [f"{counts[s]} {s}" for s in ("ok", "drift", "error", "unreachable") if counts.get(s)]
    return f"{len(result.hosts)} hosts: " + ", ".join(parts) + f" ({result.seconds:.2f}s)"


def render_plan_table(result: FleetPlanResult, changes_only: bool = False) -> str:
    """The hosts × areas table; hosts that are ok can be hidden. No value is ever cut (see fleet_table)."""
    headers = ["host", *(AREA_TITLES[a] for a in AREAS), "status"]
    rows = []
    for plan in result.hosts:
        if changes_only and plan.status == "ok":
            continue
        cells = [area_cell(plan, area)["text"] for area in AREAS]
        rows.append([plan.name, *cells, plan.status])
    lines = [render_table(headers, rows)]
    problems = [f"  {p.name}: {p.error}" for p in result.hosts if p.error]
    if problems:
        lines += ["", "Problems:", *problems]
    lines += ["", plan_headline(result)]
    return "\n".join(lines)


def render_plan_markdown(result: FleetPlanResult) -> str:
    headers = ["host", *(AREA_TITLES[a] for a in AREAS), "status"]
    lines = [f"# Fleet plan: {result.inventory}", "", plan_headline(result), "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for plan in result.hosts:
        cells = [_md(area_cell(plan, area)["text"]) for area in AREAS]
        lines.append("| " + " | ".join([_md(plan.name), *cells, plan.status]) + " |")
    details = [p for p in result.hosts if p.status != "ok"]
    if details:
        lines += ["", "## Hosts that differ", ""]
    for plan in details:
        lines.append(f"- **{_md(plan.name)}** ({plan.status})" + (f": {_md(plan.error)}" if plan.error else ""))
        for area in AREAS:
            for item in area_cell(plan, area)["pending"]:
                fields = ", ".join(str(c["field"]) for c in item.get("changes", []))
                lines.append(f"  - {AREA_TITLES[area]}: `{item['id']}` {item['status']}"
                             + (f" ({_md(fields)})" if fields else "")
                             + (f": {_md(str(item['reason']))}" if item.get("reason") else ""))
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_apply_summary(result: FleetApplyResult) -> str:
    lines = ["", f"Fleet apply {result.run_id}" + (f" (resumes {result.resumed_from})" if result.resumed_from else ""),
             ""]
    width = max([len(h.name) for h in result.hosts] + [4])
    lines.append(f"{'host':<{width}}  batch  {'status':<11}  changed  gen   seconds  note")
    for host in result.hosts:
        note = host.error or ""
        if host.rollback:
            rb = host.rollback
            back = (f"rolled back to gen {rb['to']} (gen {rb['generation']})" if rb.get("ok")
                    else f"rollback failed: {rb.get('error')}")
            note = f"{back}; {note}" if note else back
        batch = f"{host.batch}{'c' if host.canary else ''}" if host.batch else "-"
        gen = str(host.generation) if host.generation else "-"
        lines.append(f"{host.name:<{width}}  {batch:<5}  {host.status:<11}  {host.changed:>7}  {gen:<4}  "
                     f"{host.seconds:>7.2f}  {note.splitlines()[0] if note else ''}".rstrip())
    lines += ["", apply_headline(result)]
    if result.aborted:
        lines.append(f"ABORTED: {result.aborted}")
    if result.count("not-run") or result.aborted:
        lines.append("Fix the cause, then continue with `provision fleet apply --resume` (finished hosts are skipped).")
    return "\n".join(lines)


def apply_headline(result: FleetApplyResult) -> str:
    """The counts line of a fleet apply (all that --quiet prints)."""
    counts = result.as_json()["summary"]
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" in {result.seconds:.2f}s"
