"""Verdicts for the ComfyUI smoke test: server up, plugins imported, nodes registered, models listed."""

from __future__ import annotations

import re
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
                       measured={"seconds": observed.get("seconds"), "argv": observed.get("argv")},
                       diagnosis=_startup_diagnosis(log))
    if not observed.get("ready"):
        return verdict(check, "fail", f"ComfyUI did not answer /system_stats within {observed.get('timeout')} s",
                       measured={"last_error": observed.get("last_error")}, diagnosis=_startup_diagnosis(log))
    stats = observed.get("stats") or {}
    system = stats.get("system") or {}
    devices = [d.get("name") for d in stats.get("devices") or []]
    measured = {"url": observed.get("url"), "mode": observed.get("mode"), "pid": observed.get("pid"),
                "seconds": observed.get("seconds"), "argv": observed.get("argv"),
                "comfyui_version": system.get("comfyui_version"), "pytorch_version": system.get("pytorch_version"),
                "devices": devices, "cuda_visible_devices": observed.get("cuda_visible_devices")}
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
    if "Found no NVIDIA driver" in log:
        return ("torch finds no NVIDIA driver, and ComfyUI runs on the GPU unless given --cpu: install the driver "
                "(or pass the GPU into the container); on a host without a GPU, let the resolver pick CPU mode "
                "(gpu.arch: auto with gpu.allow_cpu), which gives the service and this check --cpu")
    return f"see the ComfyUI log; its last line: {tail}" if tail else "ComfyUI printed nothing"


def judge_plugins(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "smoke.plugins"
    if not observed.get("started"):
        return verdict(check, "skip", "ComfyUI was not started by this check, so its startup log is not at hand")
    log = str(observed.get("log") or "")
    exited = observed.get("exited")
    if not comfy_log.custom_nodes_loaded(log):
        if exited is not None and comfy_log.loading_custom_nodes(log):
            last = [line for line in log.splitlines() if line.strip()][-1:] or ["(no output)"]
            return verdict(check, "fail", f"ComfyUI exited with status {exited} while importing custom nodes",
                           diagnosis=f"a plugin's import killed ComfyUI; its last line: {last[0]}")
        when = f"exited with status {exited}" if exited is not None else "did not start"
        return verdict(check, "skip", f"ComfyUI {when} before it imported custom nodes (see smoke.server): "
                       "the plugins were not checked")
    needed = set(observed.get("needed") or [])
    managed = set(observed.get("plugins") or [])
    plugins = comfy_log.plugin_failures(log)
    nodes = comfy_log.node_failures(log)
    complaints = comfy_log.version_complaints(log)
    failed_plugins = [f for f in plugins if f.plugin in managed]
    failed_nodes = {name: error for name, error in nodes.items() if name in needed}
    information = [_builtin_note(b) for b in comfy_log.builtin_failures(log)]
    information += [f"plugin {f.plugin} (not in this manifest) did not import ({f.error or 'see the log'})"
                    for f in plugins if f.plugin not in managed]
    unneeded = sorted(name for name in nodes if name not in needed)
    if unneeded:
        information.append(f"node(s) this manifest does not need did not import: {', '.join(unneeded)}")
    measured: dict[str, Any] = {"failed_plugins": [f.plugin for f in plugins], "failed_nodes": sorted(nodes),
                                "needed_failed": sorted(failed_nodes), "information": information}
    if failed_plugins:
        first = failed_plugins[0]
        names = ", ".join(f.plugin for f in failed_plugins)
        diagnosis = "; ".join(f"{f.plugin}: {f.error} -> {_plugin_diagnosis(f.error, complaints, criteria)}"
                              if f.error else f"{f.plugin}: see ComfyUI's log" for f in failed_plugins)
        return verdict(check, "fail", f"IMPORT FAILED: {names}" + (f" ({first.error})" if first.error else ""),
                       measured=measured, diagnosis=diagnosis)
    if failed_nodes:
        diagnosis = "; ".join(f"{name}: {error} -> {node_diagnosis(error, complaints, criteria)}"
                              for name, error in sorted(failed_nodes.items()))
        return verdict(check, "fail", f"needed plugin node(s) failed to import: {', '.join(sorted(failed_nodes))}",
                       measured=measured, diagnosis=diagnosis)
    summary = (f"the {len(needed)} needed node(s) imported" if needed else "no plugin this manifest uses failed")
    if information:
        summary += "; information: " + "; ".join(information)
    return verdict(check, "pass", summary, measured=measured)


def _builtin_note(failure: comfy_log.BuiltinFailure) -> str:
    """ComfyUI's own module, not a plugin's: named with the package it misses, if the log says."""
    module = re.search(r"No module named '([\w.]+)'", failure.error or "")
    cause = f"it needs {module.group(1).split('.')[0]}, which is not installed" if module else (
        failure.error or "see ComfyUI's log")
    return f"ComfyUI's own {failure.folder}/{failure.file} did not import ({cause}); only its nodes are missing"


def _plugin_diagnosis(error: str, complaints: list[str], criteria: Criteria) -> str:
    module = re.search(r"No module named '([\w.]+)'", error)
    if module and not module.group(1).startswith("nunchaku"):
        return f"the plugin needs {module.group(1)}: pip install {module.group(1).split('.')[0]} into the venv"
    return node_diagnosis(error, complaints, criteria)


def node_diagnosis(error: str | None, complaints: list[str], criteria: Criteria) -> str:
    """Why a nunchaku node did not import, and the fix, for the mode the host was resolved to."""
    text = error or ""
    about_nunchaku = "nunchaku" in text or bool(complaints)
    if about_nunchaku and criteria.mode in ("cpu", "plain"):
        why = "CPU mode: there is no NVIDIA GPU to run it" if criteria.mode == "cpu" else "plain ComfyUI loaders"
        return (f"nunchaku is not used on this host ({why}), so its nodes cannot load: remove them from "
                "checks.nodes, or provision a host with a GPU nunchaku supports")
    install = (f"install {criteria.nunchaku_wheel} (`provision apply` does)" if criteria.nunchaku_wheel
               else "install the nunchaku wheel the resolver picks (`provision apply` does)")
    if "No module named 'nunchaku'" in text:
        return f"nunchaku is not installed in this venv: {install}"
    if "No module named 'nunchaku._C'" in text or complaints:
        found = f" ({complaints[0]})" if complaints else ""
        return (f"the installed `nunchaku` is not nunchaku's engine{found}: PyPI's unrelated package of that name, "
                f"or a release older than the plugin needs: `pip uninstall nunchaku`, then {install}")
    module = re.search(r"No module named '(nunchaku\.[\w.]+)'", text)
    symbol = re.search(r"cannot import name '(\w+)' from '(nunchaku[\w.]*)'", text)
    if module or symbol:
        missing = module.group(1) if module else f"{symbol.group(2)}.{symbol.group(1)}"  # type: ignore[union-attr]
        return (f"the installed nunchaku lacks {missing}: it is older than this plugin release needs; "
                f"{install}, or pin a plugin release made for the installed nunchaku")
    other = re.search(r"No module named '([\w.]+)'", text)
    if other:
        return f"a dependency of this node is missing: pip install {other.group(1).split('.')[0]} into the venv"
    return diagnose.import_error(text, None, None, None)


def judge_nodes(observed: Observed, criteria: Criteria) -> CheckResult:
    check = "smoke.nodes"
    wanted = list(observed.get("wanted") or [])
    if not wanted:
        return verdict(check, "skip", "the manifest needs no particular nodes (checks.nodes, model loaders)")
    if not observed.get("ready"):
        return verdict(check, "skip", NOT_SERVING)
    missing = list(observed.get("missing") or [])
    measured = {"registered": observed.get("registered_count"), "missing": missing,
                "modules": observed.get("modules")}
    thresholds = {"nodes": wanted}
    if missing:
        log = str(observed.get("log") or "")
        causes = comfy_log.node_failures(log)
        complaints = comfy_log.version_complaints(log)
        managed = set(observed.get("plugins") or [])
        reasons = [f"{name}: {causes[name]} -> {node_diagnosis(causes[name], complaints, criteria)}"
                   for name in missing if causes.get(name)]
        reasons += [f"plugin {p.plugin} failed to import ({p.error})"
                    + (f" -> {_plugin_diagnosis(p.error, complaints, criteria)}" if p.error else "")
                    for p in comfy_log.plugin_failures(log) if not managed or p.plugin in managed]
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
