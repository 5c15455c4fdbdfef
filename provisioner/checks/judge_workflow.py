"""The verdict on the manifest's workflow run: its timings, peak VRAM and output files, or why ComfyUI refused
or failed it and the fix (a node no plugin registers, a model file not in its folder, an input it lacks)."""

from __future__ import annotations

from typing import Any

from provisioner.checks import diagnose
from provisioner.checks.criteria import Criteria
from provisioner.checks.judge_gpu import Observed, verdict
from provisioner.checks.judge_smoke import NOT_SERVING
from provisioner.checks.model import CheckResult

CHECK = "smoke.workflow"
# The model inputs of the loaders: input name -> the ComfyUI folder its files come from.
MODEL_INPUTS = {
    "unet_name": "diffusion_models", "model_name": "diffusion_models", "model_path": "diffusion_models",
    "ckpt_name": "checkpoints", "vae_name": "vae", "clip_name": "text_encoders", "clip_name1": "text_encoders",
    "clip_name2": "text_encoders", "clip_name3": "text_encoders", "text_encoder": "text_encoders",
    "text_encoder1": "text_encoders", "text_encoder2": "text_encoders",
    "lora_name": "loras", "control_net_name": "controlnet", "style_model_name": "style_models",
    "clip_vision_name": "clip_vision", "upscale_model_name": "upscale_models",
}


def judge_workflow(observed: Observed, criteria: Criteria) -> CheckResult:
    if not observed.get("configured"):
        return verdict(CHECK, "skip", "no workflow configured (checks.workflow)")
    if observed.get("skipped"):
        return verdict(CHECK, "skip", str(observed["skipped"]))
    if not observed.get("ready"):
        return verdict(CHECK, "skip", NOT_SERVING)
    name = observed.get("name")
    measured = _measured(observed)
    if "refused" in observed:
        summary, diagnosis = refusal(observed["refused"], criteria)
        return verdict(CHECK, "fail", f"ComfyUI refused {name} (HTTP {observed.get('http_status')}): {summary}",
                       measured=measured, diagnosis=diagnosis)
    if observed.get("error"):
        return verdict(CHECK, "fail", str(observed["error"]).splitlines()[0], measured=measured,
                       diagnosis=diagnose.cuda_error(str(observed["error"]), None)
                       or "see ComfyUI's log for the failing node")
    if observed.get("timed_out"):
        return verdict(CHECK, "fail", f"{name} did not finish within {observed.get('timeout')} s", measured=measured,
                       diagnosis="the run is slower than checks allow or hangs: see ComfyUI's log and GET /queue")
    status = observed.get("status") or {}
    if status.get("status_str") == "error" or not status.get("completed"):
        return _execution_failure(status, measured)
    if not measured["outputs"]:
        return verdict(CHECK, "fail", f"{name} ran but saved no image", measured=measured,
                       diagnosis="end the workflow with a SaveImage node (an output node that writes a file)")
    cold = f" (first run, loading the models: {measured['seconds_cold']} s)" if measured["seconds_cold"] else ""
    return verdict(CHECK, "pass", f"{name} ran in {measured['seconds']} s{cold}, {_rate_text(measured)}, "
                   f"peak VRAM {_vram_text(measured)}; saved {', '.join(measured['outputs'])}", measured=measured)


def _measured(observed: Observed) -> dict[str, Any]:
    seconds = observed.get("seconds")
    steps = observed.get("iterations") or observed.get("steps")
    per_step = observed.get("seconds_per_iteration")
    source = "sampler progress"
    if per_step is None and isinstance(seconds, int | float) and steps:
        # No progress bar at hand (a running service's log is not ours): the whole run over its sampler steps.
        per_step, source = round(float(seconds) / int(steps), 4), "run seconds / sampler steps"
    return {"prompt_id": observed.get("prompt_id"), "seconds": seconds, "seconds_cold": observed.get("seconds_cold"),
            "runs": observed.get("runs"), "steps": steps,
            "seconds_per_step": per_step, "seconds_per_step_from": source if per_step is not None else None,
            "seconds_per_iteration": observed.get("seconds_per_iteration"), "iterations": observed.get("iterations"),
            "peak_vram_mib": observed.get("peak_vram_mib"),
            "peak_device_vram_mib": observed.get("peak_device_vram_mib"),
            "vram_device": observed.get("vram_device"), "outputs": list(observed.get("outputs") or []),
            "written": observed.get("written") or []}


def _rate_text(measured: dict[str, Any]) -> str:
    if measured["seconds_per_step"] is None:
        return "steps not known"
    return f"{measured['seconds_per_step']} s/step over {measured['steps']} steps"


def _vram_text(measured: dict[str, Any]) -> str:
    if measured["peak_vram_mib"] is None:
        return f"not measured (ComfyUI runs on {measured['vram_device'] or 'no GPU'})"
    return f"{measured['peak_vram_mib']} MiB torch-allocated ({measured['peak_device_vram_mib']} MiB device)"


def refusal(body: Any, criteria: Criteria) -> tuple[str, str]:
    """The summary and fix for ComfyUI's 400 answer to POST /prompt: {"error": {type, message, details,
    extra_info}, "node_errors": {id: {"errors": [...], "class_type", "dependent_outputs"}}}."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return str(body)[:300], "fix the workflow (API format: node id -> {class_type, inputs})"
    error: dict[str, Any] = body["error"]
    node_errors = body.get("node_errors") or {}
    message = str(error.get("message") or error.get("type"))
    if error.get("type") == "invalid_prompt" and "does not exist" in message:
        # "Cannot execute because node X does not exist.": ComfyUI reports the first unknown class only.
        class_type = message.split("because node ", 1)[-1].rsplit(" does not exist", 1)[0]
        return f"{message} ({error.get('details')})", _missing_node_fix(class_type, criteria)
    if not isinstance(node_errors, dict) or not node_errors:
        return f"{message}: {error.get('details')}", "fix the workflow: " + str(error.get("type"))
    problems: list[str] = []
    fixes: list[str] = []
    for node_id, node in node_errors.items():
        class_type = str((node or {}).get("class_type"))
        for item in (node or {}).get("errors") or []:
            problem, fix = _node_error(str(node_id), class_type, item, criteria)
            problems.append(problem)
            fixes.append(fix)
    return "; ".join(problems), "; ".join(dict.fromkeys(fixes))


def _missing_node_fix(class_type: str, criteria: Criteria) -> str:
    provider = criteria.node_providers.get(class_type)
    if provider:
        return (f"{class_type} is registered by {provider}: add it to comfyui.plugins at a release that has it, "
                "and see smoke.nodes for why it did not load if it is listed")
    return (f"no plugin in the catalog registers {class_type}: add the custom-node package that provides it to "
            "comfyui.plugins (`provision workflow analyze` lists who provides each node), or replace the node")


def _node_error(node_id: str, class_type: str, item: dict[str, Any], criteria: Criteria) -> tuple[str, str]:
    kind = item.get("type")
    extra = item.get("extra_info") or {}
    input_name = str(extra.get("input_name") or "")
    where = f"node {node_id} ({class_type})"
    if kind == "value_not_in_list" and input_name in MODEL_INPUTS:
        value = str(extra.get("received_value"))
        folder = MODEL_INPUTS[input_name]
        return f"{where}: model file {value!r} is not in models/{folder}", _missing_model_fix(value, folder, criteria)
    if kind == "value_not_in_list":
        allowed = (extra.get("input_config") or [[]])[0]
        return (f"{where}: {input_name} = {extra.get('received_value')!r} is not accepted",
                f"set {input_name} of node {node_id} to one of: {', '.join(map(str, allowed))}")
    if kind == "required_input_missing":
        choices = criteria.plugin_settings.get(input_name)
        if choices is not None:
            values = f" ({', '.join(choices)})" if choices else ""
            return (f"{where} lacks the required input {input_name}",
                    f"{class_type} of this plugin release requires {input_name}{values}: set "
                    f"comfyui.plugins[].settings.{input_name} (provision then writes it into the workflow it sends), "
                    f"or add \"{input_name}\" to node {node_id}'s inputs in the workflow file")
        return (f"{where} lacks the required input {input_name}",
                f"add {input_name} to node {node_id}'s inputs (a value, or a link [node id, output index]); "
                "an older workflow may predate the input")
    return (f"{where}: {item.get('message')}: {item.get('details')}",
            f"fix input {input_name or '?'} of node {node_id}")


def _missing_model_fix(value: str, folder: str, criteria: Criteria) -> str:
    for installed_folder, filename, origin in criteria.installed:
        if filename == value:
            if installed_folder != folder:
                return (f"{origin} installs {value} into {installed_folder}, but the loader looks in {folder}: "
                        f"set its folder to {folder}")
            return (f"{origin} installs it, but it is not in {folder} on the host: run `provision apply` "
                    "(and see smoke.models)")
    for index, model in enumerate(criteria.models):
        if model.pattern().fullmatch(value):
            return (f"models[{index}] ({model.file}) names it, but the resolver picks another file for this GPU: "
                    "the workflow should load the file `provision resolve` lists")
    return (f"no entry in the manifest's models installs {value}: add it to models with folder: {folder} "
            "(`provision workflow analyze --manifest` names what is missing)")


def _execution_failure(status: dict[str, Any], measured: dict[str, Any]) -> CheckResult:
    """A run that failed: history's status_str "error" and its execution_error message."""
    errors = [m[1] for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2
              and m[0] == "execution_error" and isinstance(m[1], dict)]
    if not errors:
        return verdict(CHECK, "fail", "the workflow did not complete (no execution_error message)", measured=measured,
                       diagnosis="see ComfyUI's log for the failing node")
    error = errors[0]
    text = f"{error.get('exception_type')}: {error.get('exception_message')}"
    where = f"node {error.get('node_id')} ({error.get('node_type')})"
    diagnosis = diagnose.cuda_error(text, None)
    if diagnosis is None and "out of memory" in text.lower():
        diagnosis = "the GPU ran out of memory: set comfyui.plugins[].settings.cpu_offload to enable, or use a " \
                    "smaller model (int4, a lower rank)"
    if diagnosis is None and ("deserializ" in text or "header" in text.lower()):
        diagnosis = "the model file is damaged or incomplete: delete it and run `provision apply` to fetch it again"
    return verdict(CHECK, "fail", f"{where} failed: {text.strip()}", measured=measured,
                   diagnosis=diagnosis or f"see the traceback of {where} in ComfyUI's log")
