"""Verdicts for the ComfyUI smoke test: server up, plugins imported, nodes registered, models listed."""

from __future__ import annotations

from typing import Any

from provisioner.checks import comfy_log, diagnose
from provisioner.checks.criteria import Criteria
from provisioner.checks.judge_gpu import Observed, verdict
from provisioner.checks.model import CheckResult

NOT_SERVING = "ComfyUI is not serving (see smoke.server)"


def judge_server(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "smoke.server"
    if observed.get("venv_missing"):
        return verdict(check, "fail", f"the venv interpreter {observed['venv_missing']} does not exist",
                       diagnosis="run `provision apply` for this manifest first (or fix python.venv / python.adopt)")
    if observed.get("missing"):
        return verdict(check, "fail", f"ComfyUI is not installed: {observed['missing']} does not exist",
                       diagnosis="run `provision apply` for this manifest (comfyui.path)")
    if observed.get("error"):
        return verdict(check, "fail", str(observed["error"]),
                       diagnosis="start the ComfyUI service, or run the check without --use-running")
    log = str(observed.get("log") or "")
    if "exited" in observed:
        last = [line for line in log.splitlines() if line.strip()][-1:] or ["(no output)"]
        return verdict(check, "fail", f"ComfyUI exited with status {observed['exited']} during startup: {last[0]}",
                       measured={"seconds": observed.get("seconds")}, diagnosis=_startup_diagnosis(log))
    if not observed.get("ready"):
        return verdict(check, "fail", f"ComfyUI did not answer /system_stats within {observed.get('timeout')} s",
                       measured={"last_error": observed.get("last_error")}, diagnosis=_startup_diagnosis(log))
    stats = observed.get("stats") or {}
    system = stats.get("system") or {}
    devices = [d.get("name") for d in stats.get("devices") or []]
    measured = {"url": observed.get("url"), "mode": observed.get("mode"), "pid": observed.get("pid"),
                "seconds": observed.get("seconds"),
                "comfyui_version": system.get("comfyui_version"), "pytorch_version": system.get("pytorch_version"),
                "devices": devices}
    how = "started" if observed.get("mode") == "started" else "running service"
    return verdict(check, "pass", f"ComfyUI {system.get('comfyui_version') or '?'} answers at {observed.get('url')} "
                   f"({how}, {observed.get('seconds', 0)} s); devices: {', '.join(map(str, devices)) or 'none'}",
                   measured=measured)


def _startup_diagnosis(log: str) -> str:
    lines = [line for line in log.splitlines() if line.strip()]
    tail = lines[-1] if lines else ""
    if "No module named" in tail:
        return f"{tail}: ComfyUI's requirements are not installed in the venv (`provision apply`)"
    if "Torch not compiled with CUDA enabled" in log:
        return "the venv's torch is a CPU build: install a CUDA build of torch"
    return f"see the ComfyUI log; its last line: {tail}" if tail else "ComfyUI printed nothing"


def judge_plugins(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "smoke.plugins"
    if not observed.get("started"):
        return verdict(check, "skip", "ComfyUI was not started by this check, so its startup log is not at hand")
    log = str(observed.get("log") or "")
    failures = comfy_log.plugin_failures(log)
    nodes = comfy_log.node_failures(log)
    complaints = comfy_log.version_complaints(log)
    measured: dict[str, Any] = {"failed_plugins": [f.plugin for f in failures], "failed_nodes": sorted(nodes)}
    if failures:
        first = failures[0]
        names = ", ".join(f.plugin for f in failures)
        diagnosis = "; ".join(f"{f.plugin}: {f.error}" + (f" -> {_import_diag(f.error)}" if f.error else "")
                              for f in failures)
        return verdict(check, "fail", f"IMPORT FAILED: {names}" + (f" ({first.error})" if first.error else ""),
                       measured=measured, diagnosis=diagnosis)
    if nodes:
        diagnosis = "; ".join(f"{name}: {error}" for name, error in sorted(nodes.items()))
        if complaints:
            diagnosis = f"{complaints[0]} -> the installed nunchaku is not the right package or version; {diagnosis}"
        return verdict(check, "fail", f"plugin nodes failed to import: {', '.join(sorted(nodes))}",
                       measured=measured, diagnosis=diagnosis)
    return verdict(check, "pass", "no custom-node import failures in ComfyUI's log", measured=measured)


def _import_diag(error: str | None) -> str:
    return diagnose.import_error(error or "", None, None, None)


def judge_nodes(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "smoke.nodes"
    wanted = list(observed.get("wanted") or [])
    if not wanted:
        return verdict(check, "skip", "the manifest names no nodes (checks.nodes)")
    if not observed.get("ready"):
        return verdict(check, "skip", NOT_SERVING)
    missing = list(observed.get("missing") or [])
    measured = {"registered": observed.get("registered_count"), "missing": missing,
                "modules": observed.get("modules")}
    thresholds = {"nodes": wanted}
    if missing:
        log = str(observed.get("log") or "")
        causes = comfy_log.node_failures(log)
        plugins = comfy_log.plugin_failures(log)
        reasons = [f"{name}: {causes[name]}" for name in missing if causes.get(name)]
        reasons += [f"plugin {p.plugin} failed to import ({p.error})" for p in plugins]
        diagnosis = "; ".join(reasons) or (
            "no plugin registers these nodes: check that the plugin providing them is installed (comfyui.plugins) "
            "and that its version has them")
        return verdict(check, "fail", f"missing node(s): {', '.join(missing)}", measured=measured,
                       thresholds=thresholds, diagnosis=diagnosis)
    return verdict(check, "pass", f"all {len(wanted)} node(s) registered: {', '.join(wanted)}", measured=measured,
                   thresholds=thresholds)


def judge_models(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "smoke.models"
    if not criteria.models:
        return verdict(check, "skip", "the manifest lists no models")
    if not observed.get("ready"):
        return verdict(check, "skip", NOT_SERVING)
    listings: dict[str, Any] = observed.get("listings") or {}
    missing: list[str] = []
    errors: list[str] = []
    for model in criteria.models:
        listing = listings.get(model.folder)
        if isinstance(listing, dict):
            errors.append(f"{model.folder}: {listing.get('error')}")
            continue
        names = [str(n).replace("\\", "/") for n in listing or []]
        if not any(model.pattern().fullmatch(n) for n in names):
            missing.append(f"{model.folder}/{model.file}")
    measured = {"listed": {k: len(v) if isinstance(v, list) else v for k, v in listings.items()}, "missing": missing}
    if errors or missing:
        return verdict(check, "fail", "not listed by ComfyUI: " + ", ".join(missing + errors), measured=measured,
                       diagnosis="download the models (`provision apply`) into ComfyUI's models/<folder>, or wire "
                       "the shared models root in with comfyui.models_root (extra_model_paths.yaml)")
    return verdict(check, "pass", f"{len(criteria.models)} model(s) listed in their folders", measured=measured)


def judge_workflow(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "smoke.workflow"
    if not observed.get("configured"):
        return verdict(check, "skip", "no workflow configured (checks.workflow)")
    if not observed.get("ready"):
        return verdict(check, "skip", NOT_SERVING)
    measured = {k: observed.get(k) for k in ("prompt_id", "seconds", "seconds_per_iteration", "iterations")}
    if observed.get("error"):
        return verdict(check, "fail", str(observed["error"]).splitlines()[0], measured=measured,
                       diagnosis="fix the workflow (API format, node names and model files must exist)")
    status = observed.get("status") or {}
    if observed.get("timed_out") or status.get("status_str") == "error":
        messages = [m for m in status.get("messages") or [] if m and m[0] == "execution_error"]
        detail = messages[0][1].get("exception_message") if messages else "no result in time"
        return verdict(check, "fail", f"the workflow did not complete: {detail}", measured=measured,
                       diagnosis=diagnose.cuda_error(str(detail), None) or "see ComfyUI's log for the failing node")
    rate = observed.get("seconds_per_iteration")
    rate_text = f", {rate} s/it" if rate is not None else ""
    return verdict(check, "pass", f"workflow completed in {observed.get('seconds')} s{rate_text}", measured=measured)
