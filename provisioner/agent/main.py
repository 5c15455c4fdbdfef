"""Agent entry point: dispatch one request ('facts', 'probe', 'apply', 'generations')."""

from __future__ import annotations

import os
import time

from . import dependencies, leftovers, masking, notifications, orphans, planguard, procs, records, removal, state
from .kinds import kind
from .protocol import Change, Context, ResourceFailure, emit
from .rootlock import RootLock

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Set

PROTOCOL_VERSION = 1
#: Operations that change the root (services included): one at a time per root, under its lock.
WRITES = ("apply", "rollback")


def serve(request: Dict[str, Any]) -> int:
    """Handle one request; the last line written is a 'result' or an 'error' event."""
    try:
        if request.get("protocol") != PROTOCOL_VERSION:
            raise ResourceFailure("controller speaks protocol %r, agent speaks %d" % (
                request.get("protocol"), PROTOCOL_VERSION))
        op = request.get("op")
        masking.remember_request(request)
        handler = {"facts": _facts, "probe": _probe, "apply": _apply, "rollback": _rollback,
                   "generations": _generations}.get(op or "")
        if handler is None:
            raise ResourceFailure("unknown operation %r" % op)
        if op in WRITES:
            emit("result", result=_locked(handler, request))
        else:
            emit("result", result=handler(request))
        return 0
    except ResourceFailure as exc:
        emit("error", error=str(exc), kind="failure")
        return 1
    except Exception:  # a bug in the agent: send the traceback so it can be reported
        import traceback

        emit("error", error=traceback.format_exc(), kind="bug")
        return 1


def _locked(handler: Callable[[Dict[str, Any]], Dict[str, Any]], request: Dict[str, Any]) -> Dict[str, Any]:
    ctx = _context(request)
    if request["op"] == "rollback" and not os.path.isdir(ctx.state_dir()):
        return handler(request)  # nothing was ever applied here: it fails without creating the root
    with RootLock(ctx.state_dir(), ctx.root, request["op"], request):
        return handler(request)


def _context(request: Dict[str, Any]) -> Context:
    return Context(request["root"], request.get("options"), request.get("extra_roots"))


def _facts(request: Dict[str, Any]) -> Dict[str, Any]:
    from . import facts  # only this operation needs it

    return facts.gather(request)


def _generations(request: Dict[str, Any]) -> Dict[str, Any]:
    ctx = _context(request)
    numbers = state.list_generations(ctx.state_dir())
    wanted = request.get("numbers") or numbers[-20:]
    return {"generations": [state.read(ctx.state_dir(), n) for n in wanted if n in numbers]}


def classify(resource: Dict[str, Any], changes: List[Change], previous: Dict[str, str]) -> str:
    """ok / create / drifted / change.

    drifted: this very spec was applied and converged before (the generations say so), and the host
    moved away from it, even if what is missing now would be created (a package uninstalled, a file
    deleted). create: never converged here and only missing things to add. change: the spec is new.
    """
    if not changes:
        return "ok"
    if previous.get(resource["id"]) == resource["digest"]:
        return "drifted"
    if all(c["action"] == "create" for c in changes):
        return "create"
    return "change"


def _probe_one(resource: Dict[str, Any], ctx: Context, previous: Dict[str, str],
               request: Dict[str, Any]) -> Dict[str, Any]:
    spec = resource["spec"]
    try:
        if spec.get("state") == "absent":
            return removal.row(resource, ctx, request, explicit=True)
        module = kind(resource["kind"])
        observed = module.probe(spec, ctx)
        changes = module.diff(spec, observed, ctx)
        notes = module.notes(spec, observed) if hasattr(module, "notes") else []
    except ResourceFailure as exc:
        return {"id": resource["id"], "status": "error", "changes": [], "error": str(exc), "observed": None}
    result = {
        "id": resource["id"], "status": classify(resource, changes, previous),
        "changes": [dict(c) for c in changes], "observed": observed,
        "observed_digest": planguard.observed_digest(observed, getattr(module, "NOT_STATE", ())),
    }
    if notes:
        result["notes"] = notes
    return result


def _probe_all(request: Dict[str, Any], ctx: Context) -> List[Dict[str, Any]]:
    previous = state.converged_digests(ctx.state_dir())
    return [_probe_one(resource, ctx, previous, request) for resource in request["resources"]]


def _removals(request: Dict[str, Any], ctx: Context, found: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    try:
        return orphans.rows(request, ctx, found)
    except ResourceFailure as exc:
        return [{"id": "destroy", "status": "error", "changes": [], "error": str(exc)}]


def _unmanaged(request: Dict[str, Any], ctx: Context, found: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    from . import unmanaged  # only plans list it

    declared = request["resources"] + [c["record"] for c in found]
    known = [leftovers.safe_path(ctx, r["spec"].get(key)) for r in declared for key in ("path", "file")]
    return unmanaged.listing(request, ctx, [k for k in known if k])


def _public(results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    # Observed state can hold host values (env file contents): keep it on the host.
    return [{k: v for k, v in r.items() if k != "observed"} for r in results]


def _probe(request: Dict[str, Any]) -> Dict[str, Any]:
    ctx = _context(request)
    owed = notifications.plan_rows(ctx, request.get("handlers") or {})  # restarts a killed apply left owed
    found = orphans.candidates(request, ctx)
    return {"resources": _public(_probe_all(request, ctx) + _removals(request, ctx, found)) + owed,
            "unmanaged": _unmanaged(request, ctx, found), "root": ctx.root}


def _apply(request: Dict[str, Any]) -> Dict[str, Any]:
    ctx = _context(request)
    started = time.time()
    os.makedirs(ctx.root, exist_ok=True)
    found = orphans.candidates(request, ctx)
    # What killed runs left is gone before anything is probed (a destroy's folder set aside too).
    leftovers.begin(ctx, request["resources"] + [c["record"] for c in found])
    probed = _probe_all(request, ctx)
    if request.get("expect") is not None:  # a saved plan: the host must be as it was planned
        owed = notifications.plan_rows(ctx, request.get("handlers") or {})
        planguard.refuse_if_moved(request["expect"], probed, owed)
    by_id = {r["id"]: r for r in request["resources"]}
    outcomes: List[Dict[str, Any]] = []
    notified = notifications.pending(ctx)  # handlers a killed or failed apply did not get to run
    broken: List[Dict[str, Any]] = []  # failed or skipped: what later resources may need
    remade: List[Dict[str, Any]] = []  # changed by this apply: what later resources saw before it
    for result in probed:
        resource = by_id[result["id"]]
        if result["status"] != "error" and any(dependencies.needs(resource, r) for r in remade):
            result = _probe_one(resource, ctx, state.converged_digests(ctx.state_dir()), request)  # a rebuilt venv
        blocked_by = dependencies.blocker(resource, broken)
        if blocked_by is not None:
            broken.append(resource)
            outcomes.append(dict(_strip(result), outcome="skipped", after=blocked_by))
            emit("progress", id=result["id"], phase="skipped", after=blocked_by)
            continue
        if result["status"] == "error":
            broken.append(resource)
            outcomes.append(dict(_strip(result), outcome="failed"))
            continue
        if result["status"] in ("ok", "kept"):
            outcomes.append(dict(_strip(result), outcome="ok"))
            continue
        emit("progress", id=result["id"], phase="applying", changes=result["changes"])
        notifications.expect(ctx, resource.get("notify") or [])
        step_started = time.time()
        try:
            if result["status"] == "destroy":
                removal.destroy(resource, result["observed"], ctx)
            else:
                kind(resource["kind"]).apply(resource["spec"], result["observed"], result["changes"], ctx)
        except (ResourceFailure, OSError) as exc:
            broken.append(resource)
            outcomes.append(dict(_strip(result), outcome="failed", error=str(exc)))
            emit("progress", id=result["id"], phase="failed", error=str(exc))
            continue
        seconds = round(time.time() - step_started, 3)
        outcomes.append(dict(_strip(result), outcome="changed", seconds=seconds))
        remade.append(resource)
        emit("progress", id=result["id"], phase="changed", seconds=seconds)
        for handler in resource.get("notify") or []:
            if handler not in notified:
                notified.append(handler)
    if any(r["spec"].get("staged") for r in request["resources"]):
        from . import staging  # only applies the controller pushed files for

        staging.discard_unused(request["resources"], ctx)
    destroyed, destroy_failed = orphans.destroy_all(request, ctx, found, notified)
    outcomes += destroyed
    failed = bool(broken) or destroy_failed
    started_now = {o["id"] for o in outcomes if o["outcome"] == "changed"}
    handlers_run = _run_handlers(request, notified, ctx, started_now, broken)
    notifications.settle(ctx, handlers_run, request.get("handlers") or {})
    changed = any(o["outcome"] == "changed" for o in outcomes)
    if any(h.get("error") for h in handlers_run):
        failed = True
    if failed:
        reprobe: List[Dict[str, Any]] = []
    elif changed or handlers_run:
        reprobe = _public(_probe_all(request, ctx) + _removals(request, ctx, found))
    else:
        # Nothing was touched: the host is as the first probe found it.
        reprobe = _public(probed + _removals(request, ctx, found))
    unconverged = [r for r in reprobe if r["status"] not in ("ok", "kept")]
    retired = orphans.retired(request, ctx, found)
    record = {
        "time": started, "seconds": round(time.time() - started, 3),
        "manifest": request.get("manifest", {}), "status": "failed" if failed or unconverged else "ok",
        "resources": [records.recordable(r) for r in request["resources"]],
        "handlers_desired": request.get("handlers") or {},
        "changes": [o for o in outcomes if o["outcome"] != "ok"],
        "handlers": handlers_run,
        "converged": _converged(request, outcomes, unconverged, ctx, found),
        "retired": retired,
    }
    generation = state.write(ctx.state_dir(), record) if changed or failed or unconverged else None
    return {"resources": outcomes, "handlers": handlers_run, "reprobe": reprobe, "generation": generation,
            "failed": failed, "root": ctx.root,
            "recorded": records.generation_digests(record["resources"], record["handlers_desired"]),
            "retired": sorted(records.digest(r) for r in retired)}


def _rollback(request: Dict[str, Any]) -> Dict[str, Any]:
    """Re-apply the desired state of an earlier generation (downloads already present are kept)."""
    ctx = _context(request)
    numbers = state.list_generations(ctx.state_dir())
    by_number = {n: state.read(ctx.state_dir(), n) for n in numbers}
    good = [n for n in numbers if (by_number[n] or {}).get("status") == "ok"]
    target = request.get("to")
    if target is None:
        if len(good) < 2:
            raise ResourceFailure("no earlier successful generation to roll back to (have: %s)"
                                  % (", ".join(str(n) for n in good) or "none"))
        target = good[-2]
    record = by_number.get(target)
    if record is None:
        raise ResourceFailure("generation %s does not exist on the host (have: %s)"
                              % (target, ", ".join(str(n) for n in numbers) or "none"))
    if record.get("status") != "ok":
        raise ResourceFailure("generation %s did not converge (status %s); pick a successful one"
                              % (target, record.get("status")))
    records.refuse_untrusted(target, record, (request.get("trusted") or {}).get(ctx.root) or {},
                             state.path_of(ctx.state_dir(), target))
    resources = []
    retained = []
    for resource in record["resources"]:
        if resource["kind"] == "download":
            retained.append(resource)  # not fetched again, and not removed either
            continue
        spec = dict(resource["spec"])
        if spec.get("secret_values"):
            spec["secret_values"] = _restore_secrets(resource["id"], spec["secret_values"], request)
        resources.append(dict(resource, spec=spec))
    manifest = dict(record.get("manifest") or {}, rollback_to=target)
    replay = dict(request, resources=resources, handlers=record.get("handlers_desired") or {}, manifest=manifest,
                  retain=[r["id"] for r in retained], retained=retained)
    return dict(_apply(replay), rollback_to=target)


def _restore_secrets(resource_id: str, keys: Dict[str, Any], request: Dict[str, Any]) -> Dict[str, str]:
    available = request.get("secrets") or {}
    missing = [key for key in keys if key not in available]
    if missing:
        raise ResourceFailure("%s: rolling back needs the secrets %s from the controller; export them"
                              % (resource_id, ", ".join(missing)))
    return {key: available[key] for key in keys}


def _strip(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("observed", "observed_digest")}


def _converged(request: Dict[str, Any], outcomes: List[Dict[str, Any]], unconverged: List[Dict[str, Any]],
               ctx: Context, found: List[Dict[str, Any]]) -> Dict[str, str]:
    """Digests of the resources now in their desired state, carried over from earlier generations (less
    those removed because the manifest dropped them)."""
    digests = state.converged_digests(ctx.state_dir())
    for candidate in found:
        digests.pop(candidate["record"]["id"], None)
    bad = {r["id"] for r in unconverged} | {o["id"] for o in outcomes if o["outcome"] in ("failed", "skipped")}
    for resource in request["resources"]:
        if resource["id"] not in bad:
            digests[resource["id"]] = resource["digest"]
    return digests


def _restart_service(request: Dict[str, Any], name: str, ctx: Context, started_now: Set[str],
                     broken: List[Dict[str, Any]]) -> Optional[str]:
    """Restart the service resource called `name`; the error text, or None on success."""
    for resource in request["resources"]:
        if resource["kind"] == "service" and resource["spec"]["name"] == name:
            if resource["id"] in started_now or resource["spec"].get("state") == "absent":
                return None  # (re)started by this apply, after the changes that notified it
            after = dependencies.blocker(resource, broken)
            if after is not None or resource in broken:
                return "restart of %s skipped: it needs %s, which failed" % (name, after or resource["id"])
            try:
                kind("service").restart(resource["spec"], ctx)
            except ResourceFailure as exc:
                return "restart of %s failed: %s" % (name, exc)
            return None
    return "no service resource named %r to restart" % name


def _run_handlers(
    request: Dict[str, Any], notified: List[str], ctx: Context, started_now: Set[str], broken: List[Dict[str, Any]]
) -> List[Dict[str, Any]]:
    """Handlers notified by resources that changed. A restart waits only for what its service needs (a
    failed model download does not keep ComfyUI on the old plugin); a command handler can depend on
    anything, so it does not run after a failure."""
    handlers = request.get("handlers") or {}
    ran: List[Dict[str, Any]] = []
    for name in handlers:
        if name not in notified:
            continue
        spec = handlers[name]
        if broken and not spec.get("restart"):
            continue
        emit("progress", id="handler:" + name, phase="applying", changes=[])
        entry: Dict[str, Any] = {"name": name}
        if spec.get("restart"):
            # One handler may restart several services (one ComfyUI per GPU); each error is kept.
            names = spec["restart"] if isinstance(spec["restart"], list) else [spec["restart"]]
            errors = [_restart_service(request, name, ctx, started_now, broken) for name in names]
            entry["error"] = "; ".join(e for e in errors if e) or None
        else:
            cwd = ctx.path(spec["cwd"]) if spec.get("cwd") else ctx.root
            done = procs.run(spec["argv"], cwd=cwd, env=spec.get("env"), stream=ctx.verbose)
            entry["exit"] = done.returncode
            if not done.ok:
                entry["error"] = "handler %s failed (exit %d):\n%s" % (name, done.returncode, done.tail())
        if entry.get("error") is None:
            entry.pop("error", None)
        ran.append(entry)
    return ran
