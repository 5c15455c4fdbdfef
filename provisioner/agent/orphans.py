"""Resources an earlier generation created that the request no longer has: planned as destroy, removed by apply.

Only records the controller vouches for are acted on: the request carries the digests its ledger kept for
each generation (as a rollback does, see records.py), and a record of the latest generation whose digest is
not among them (a file edited on the host, a generation another controller wrote) is listed as kept, never
removed. What stays (large data without --prune, a folder that is not empty, a removal that failed) is
carried into the next generation as `retired`, so a later run still knows it.
"""

from __future__ import annotations

from . import records, removal, state
from .kinds import NAMES
from .protocol import Context

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List

#: Services stop first (before what they run from goes), then packages, then paths deepest first.
_ORDER = {"service": 0, "pip": 1}


def candidates(request: Dict[str, Any], ctx: Context) -> List[Dict[str, Any]]:
    """The latest generation's records (and what it retired) that the request does not declare."""
    numbers = state.list_generations(ctx.state_dir())
    if not numbers:
        return []
    latest = state.read(ctx.state_dir(), numbers[-1]) or {}
    wanted = {r["id"] for r in request["resources"]} | set(request.get("retain") or [])
    known = ((request.get("trusted") or {}).get(ctx.root) or {}).get(str(numbers[-1])) or {}
    vouched = set(known.get("resources") or [])
    out: List[Dict[str, Any]] = []
    for record in list(latest.get("resources") or []) + list(latest.get("retired") or []):
        if (not isinstance(record, dict) or record.get("kind") not in NAMES or not isinstance(record.get("spec"), dict)
                or record.get("id") in wanted or any(o["record"].get("id") == record.get("id") for o in out)):
            continue
        out.append({"record": record, "generation": numbers[-1], "trusted": records.digest(record) in vouched})
    return sorted(out, key=_order)


def _order(candidate: Dict[str, Any]) -> Any:
    record = candidate["record"]
    path = record["spec"].get("path") or ""
    return (_ORDER.get(record["kind"], 2), -path.count("/"), path)


def rows(request: Dict[str, Any], ctx: Context, found: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Plan rows of the candidates that still hold something (observed state included, for apply)."""
    going = [ctx.path(r["spec"]["path"]) for r in request["resources"]
             if r["spec"].get("state") == "absent" and r["kind"] in removal.PATH_KINDS]
    out = []
    for candidate in found:
        resource = dict(candidate["record"], generation=candidate["generation"])
        result = removal.row(resource, ctx, request, explicit=False, going=going)
        if result["status"] == "ok":
            continue
        if not candidate["trusted"]:
            result = dict(result, status="kept", changes=[], large=False, reason=(
                "created by generation %s, which this controller's ledger does not vouch for (edited on the host, "
                "or written by another controller): left in place" % candidate["generation"]))
        elif result["status"] == "destroy" and result["observed"].get("path"):
            going.append(result["observed"]["path"])
        out.append(result)
    return out


def destroy_all(request: Dict[str, Any], ctx: Context, found: List[Dict[str, Any]],
                notified: List[str]) -> Any:
    """Remove what the plan rows say goes, each re-probed just before (an earlier removal may have emptied a
    folder); the outcomes, and whether one failed. The handlers a removed resource notified are queued."""
    from .protocol import ResourceFailure, emit

    outcomes: List[Dict[str, Any]] = []
    failed = False
    for result in rows(request, ctx, found):
        public = {k: v for k, v in result.items() if k != "observed"}
        if result["status"] != "destroy":
            outcomes.append(dict(public, outcome="ok"))
            continue
        emit("progress", id=result["id"], phase="applying", changes=result["changes"])
        record = next(c["record"] for c in found if c["record"]["id"] == result["id"])
        try:
            removal.destroy(record, result["observed"], ctx)
        except (ResourceFailure, OSError) as exc:
            failed = True
            outcomes.append(dict(public, outcome="failed", error=str(exc)))
            emit("progress", id=result["id"], phase="failed", error=str(exc))
            continue
        outcomes.append(dict(public, outcome="changed"))
        emit("progress", id=result["id"], phase="changed")
        for handler in record.get("notify") or []:
            if handler in (request.get("handlers") or {}) and handler not in notified:
                notified.append(handler)
    return outcomes, failed


def retired(request: Dict[str, Any], ctx: Context, found: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Records the next generation carries: vouched-for candidates that still hold something, and the
    downloads a rollback kept."""
    left = {r["id"] for r in rows(request, ctx, found) if r["status"] in ("destroy", "kept")}
    carried = [c["record"] for c in found if c["trusted"] and c["record"]["id"] in left]
    return carried + list(request.get("retained") or [])
