"""The manifest's API-format workflow made fit for the host: the resolution's loader settings and model files
written into it, before the smoke check queues it."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from provisioner.checks.criteria import WantedModel
from provisioner.manifest.model import Manifest
from provisioner.resolve.result import Resolution

# The samplers whose `steps` input counts the denoising steps of a run.
SAMPLERS = ("KSampler", "KSamplerAdvanced")


@dataclass(frozen=True)
class WrittenInput:
    """One input of one workflow node that the resolution set."""

    node: str
    class_type: str
    input: str
    value: Any
    why: str


def fit_workflow(workflow: dict[str, Any], manifest: Manifest,
                 resolution: Resolution) -> tuple[dict[str, Any], list[WrittenInput]]:
    """A copy of `workflow` with the host's loader settings (cpu_offload, data_type, attention, device_id…)
    on the nodes that take them, and each model file named as the resolver picked it (the precision and rank
    of `svdq-{precision}_r{rank}-…` differ per GPU)."""
    fitted = copy.deepcopy(workflow)
    written: list[WrittenInput] = []
    settings = resolution.plugin.settings if resolution.plugin else []
    files = _resolved_files(manifest, resolution)
    for node_id, node in fitted.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            continue
        class_type = str(node.get("class_type"))
        inputs: dict[str, Any] = node["inputs"]
        for setting in settings:
            if class_type in setting.nodes and inputs.get(setting.name) != setting.value:
                inputs[setting.name] = setting.value
                written.append(WrittenInput(node_id, class_type, setting.name, setting.value, setting.why))
        for name, value in list(inputs.items()):
            if not isinstance(value, str):
                continue
            for pattern, filename in files:
                if value != filename and pattern.fullmatch(value):
                    inputs[name] = filename
                    written.append(WrittenInput(node_id, class_type, name, filename,
                                                "the model file the resolver picked for this GPU"))
                    break
    return fitted, written


def _resolved_files(manifest: Manifest, resolution: Resolution) -> list[tuple[re.Pattern[str], str]]:
    """(the manifest entry's name as a pattern, the file the resolver picked) for each listed model: the
    resolution lists them first and in order, then the files their standard workflows add."""
    listed = resolution.models[:len(manifest.models)]
    return [(WantedModel(spec.folder, spec.file).pattern(), choice.filename)
            for spec, choice in zip(manifest.models, listed, strict=False)
            if choice.filename and "{" in spec.file and choice.folder == spec.folder]


def sampler_steps(workflow: dict[str, Any]) -> int | None:
    """The denoising steps of one run: the sum of its samplers' `steps` (None where none is a literal)."""
    total = 0
    for node in workflow.values():
        if isinstance(node, dict) and node.get("class_type") in SAMPLERS:
            steps = (node.get("inputs") or {}).get("steps")
            if isinstance(steps, int) and not isinstance(steps, bool):
                total += steps
    return total or None
