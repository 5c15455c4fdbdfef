"""The fleet plan as one self-contained HTML page (no external assets), compact enough for hundreds of hosts."""

from __future__ import annotations

import datetime
import html
import json
from typing import Any

from provisioner.fleet.areas import AREA_TITLES, AREAS
from provisioner.fleet.report import plan_json
from provisioner.fleet.results import FleetPlanResult

_STYLE = """
:root { --ok:#e3f4e6; --ok-fg:#1d6b2f; --drift:#fff1c9; --drift-fg:#7a5300; --error:#fbd9d7; --error-fg:#9b1c12;
        --absent:#f4f5f7; --line:#d9dce1; --muted:#667085; }
* { box-sizing: border-box; }
body { font: 13px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2430; }
header { padding: 14px 20px 10px; border-bottom: 1px solid var(--line); background: #fafbfc; }
h1 { font-size: 18px; margin: 0 0 4px; }
.meta { color: var(--muted); }
.badges { margin-top: 8px; display: flex; gap: 8px; flex-wrap: wrap; }
.badge { padding: 2px 10px; border-radius: 10px; font-weight: 600; }
.controls { padding: 8px 20px; display: flex; gap: 16px; align-items: center; border-bottom: 1px solid var(--line); }
.controls input[type=search] { width: 260px; padding: 4px 8px; border: 1px solid var(--line); border-radius: 4px; }
.wrap { overflow: auto; max-height: calc(100vh - 150px); }
table { border-collapse: separate; border-spacing: 0; width: 100%; }
th, td { padding: 3px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; text-align: left; }
thead th { position: sticky; top: 0; background: #eef0f3; z-index: 2; font-weight: 600; }
th small { color: var(--muted); font-weight: 400; }
td.host, th.host { position: sticky; left: 0; background: #fff; z-index: 1; font-weight: 600; }
thead th.host { z-index: 3; background: #eef0f3; }
tbody tr:hover td { filter: brightness(0.97); }
td.c { text-align: center; min-width: 64px; }
td.gpu { max-width: 240px; overflow: hidden; text-overflow: ellipsis; }
.ok { color: var(--ok-fg); }
td.status.ok, .badge.ok { background: var(--ok); }
td.down { text-align: left; white-space: normal; }
.drift { background: var(--drift); color: var(--drift-fg); font-weight: 600; }
.error, .unreachable { background: var(--error); color: var(--error-fg); font-weight: 600; }
.absent { background: var(--absent); color: #a0a6b1; }
a { color: inherit; }
section#details { padding: 10px 20px 40px; }
details { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; padding: 4px 10px; }
summary { cursor: pointer; font-weight: 600; }
ul { margin: 4px 0 6px 18px; padding: 0; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.why { color: var(--muted); }
"""

_SCRIPT = """
const q = document.getElementById('filter'), only = document.getElementById('only');
function apply() {
  const text = q.value.toLowerCase();
  for (const row of document.querySelectorAll('tbody tr')) {
    const match = row.dataset.search.includes(text);
    const differs = row.dataset.status !== 'ok';
    row.style.display = match && (!only.checked || differs) ? '' : 'none';
  }
}
q.addEventListener('input', apply); only.addEventListener('change', apply);
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "…"


def render_plan_html(result: FleetPlanResult) -> str:
    data = plan_json(result)
    hosts: list[dict[str, Any]] = data["hosts"]
    counts: dict[str, int] = data["summary"]
    when = datetime.datetime.now().isoformat(timespec="seconds")
    badges = "".join(f'<span class="badge {s}">{counts[s]} {s}</span>'
                     for s in ("ok", "drift", "error", "unreachable") if counts.get(s))
    head_cells = []
    for area in AREAS:
        differing = sum(1 for h in hosts if h["areas"][area]["pending"])
        note = f"<br><small>{differing} differ</small>" if differing else "<br><small>&nbsp;</small>"
        head_cells.append(f"<th>{_e(AREA_TITLES[area])}{note}</th>")
    rows = [_row(host) for host in hosts]
    details = [_details(host) for host in hosts if host["status"] != "ok"]
    return "".join([
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>Fleet plan: {_e(result.inventory)}</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>Fleet plan</h1><div class=meta>{_e(result.inventory)} · {len(hosts)} hosts · "
        f"run {_e(result.run_id)} · {_e(when)} · {result.seconds:.2f}s · exit {data['exit_code']}</div>",
        f"<div class=badges>{badges}</div></header>",
        "<div class=controls><input id=filter type=search placeholder='filter hosts, manifests, GPUs…'>",
        "<label><input id=only type=checkbox> only hosts that differ</label>",
        "<span class=meta>cells: ok · ~N resources differ · error · <span class=absent>&nbsp;·&nbsp;</span> "
        "nothing of that area in the manifest</span></div>",
        f"<div class=wrap><table><thead><tr><th class=host>host<br><small>{len(hosts)}</small></th>",
        *head_cells, "<th>status</th><th>manifest</th></tr></thead><tbody>", *rows, "</tbody></table></div>",
        "<section id=details>", "<h2>Hosts that differ</h2>" if details else "<p>Every host matches.</p>",
        *details, f"</section><script>{_SCRIPT}</script></body></html>\n",
    ])


def _row(host: dict[str, Any]) -> str:
    name = host["host"]
    search = " ".join([name, host["manifest"], host["status"], str((host.get("gpu") or {}).get("text", ""))]).lower()
    cells = []
    if host["status"] in ("unreachable", "error") and not host.get("gpu"):
        # Nothing was learned about this host: one wide cell with the reason beats a row of "unreachable".
        cells.append(f"<td class='down {_e(host['status'])}' colspan={len(AREAS)}>{_e(host['error'] or '')}</td>")
    for area in AREAS if not cells else ():
        cell = host["areas"][area]
        title = "; ".join(f"{p['id']} ({p['status']})" for p in cell["pending"])
        css = "gpu " + cell["state"] if area == "gpu" else "c " + cell["state"]
        text = _e(cell["text"])
        if cell["pending"]:
            text = f"<a href='#host-{_e(name)}'>{text}</a>"
        cells.append(f"<td class='{css}' title='{_e(title or cell['text'])}'>{text}</td>")
    link = f"<a href='#host-{_e(name)}'>{_e(name)}</a>" if host["status"] != "ok" else _e(name)
    return (f"<tr data-status='{_e(host['status'])}' data-search='{_e(search)}'><td class=host "
            f"title='{_e(host['connection'])}'>{link}</td>{''.join(cells)}"
            f"<td class='status {_e(host['status'])}'>{_e(host['status'])}</td><td>{_e(host['manifest'])}</td></tr>")


def _details(host: dict[str, Any]) -> str:
    items = []
    for area in AREAS:
        for pending in host["areas"][area]["pending"]:
            changes = "".join(f"<li><code>{_e(c['field'])}</code>: {_e(_value(c['old']))} → {_e(_value(c['new']))}"
                              f" <span class=why>({_e(c['reason'])})</span></li>" for c in pending.get("changes", []))
            reason = f" <span class=why>{_e(pending['reason'])}</span>" if pending.get("reason") else ""
            items.append(f"<li>{_e(AREA_TITLES[area])}: <code>{_e(pending['id'])}</code> {_e(pending['status'])}"
                         f"{reason}<ul>{changes}</ul></li>")
    error = f"<p class=why>{_e(host['error'])}</p>" if host.get("error") else ""
    return (f"<details id='host-{_e(host['host'])}' open><summary>{_e(host['host'])} — {_e(host['status'])} "
            f"<span class=why>{_e(host['connection'])}</span></summary>{error}<ul>{''.join(items)}</ul></details>")
