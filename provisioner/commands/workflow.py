"""`provision workflow analyze WORKFLOW [--manifest M] [--json] [--emit]` and
`provision workflow import WORKFLOW MANIFEST`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from provisioner import redaction
from provisioner.catalog import Catalog, load_catalog
from provisioner.errors import ProvisionError
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.manifest.model import Manifest
from provisioner.render.json_output import dumps, versioned
from provisioner.usage import UsageErrorsExit1
from provisioner.workflow.analyze import Analysis, analyze
from provisioner.workflow.emit import import_sections, sections
from provisioner.workflow.parse import load_workflow
from provisioner.workflow.suggest import Host

EXIT_OK, EXIT_ERROR, EXIT_LACKS = 0, 1, 2

path_argument = click.Path(path_type=Path, dir_okay=False)


def _fail(exc: ProvisionError) -> None:
    click.secho(redaction.redact(f"error: {exc}"), fg="red", err=True)
    sys.exit(EXIT_ERROR)


def _host(catalog: Catalog, manifest: Manifest | None, facts_path: Path | None, gpu: str | None) -> Host:
    index = manifest.gpu.index if manifest else 0
    if facts_path is not None:
        found = load_facts(facts_path).gpu(index)
        if found is not None:
            return Host(found.sm, found.memory_total_mib, found.name)
    if gpu is not None:
        model = catalog.gpu_model(gpu)
        if model is None:
            raise ProvisionError(f"--gpu {gpu!r}: not a GPU the catalog knows; name one such as 'RTX 3090', or "
                                 "pass --facts")
        return Host(model.arch, int(model.vram_gib * 1024), model.name)
    if manifest is not None and manifest.gpu.arch not in ("auto", "none"):
        return Host(manifest.gpu.arch)
    return Host()


@click.group("workflow", cls=UsageErrorsExit1)
def workflow() -> None:
    """Read a ComfyUI workflow: its nodes, model files, and what a manifest needs to run it."""


@workflow.command("analyze")
@click.argument("workflow_file", metavar="WORKFLOW", type=path_argument)
@click.option("--manifest", "manifest_path", type=path_argument, help="Report what this manifest lacks.")
@click.option("--facts", "facts_path", type=path_argument, help="Host facts (JSON) the suggestions are for.")
@click.option("--gpu", help="GPU the suggestions are for, e.g. 'RTX 3090' (instead of --facts).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--emit", is_flag=True, help="Print the comfyui.plugins and models sections as manifest YAML.")
@click.option("--nunchaku", is_flag=True, help="With --emit: the suggested Nunchaku files replace the plain ones.")
def analyze_command(workflow_file: Path, manifest_path: Path | None, facts_path: Path | None, gpu: str | None,
                    as_json: bool, emit: bool, nunchaku: bool) -> None:
    """List WORKFLOW's node classes and who provides them, its model files and folders, the Nunchaku
    replacements, and with --manifest what the manifest lacks (exit 2 when it lacks something)."""
    try:
        catalog = load_catalog()
        manifest = load_manifest(manifest_path).manifest if manifest_path else None
        result = analyze(load_workflow(workflow_file), catalog, _host(catalog, manifest, facts_path, gpu),
                         manifest, str(manifest_path) if manifest_path else None)
    except ProvisionError as exc:
        _fail(exc)
        return
    if emit:
        click.echo(sections(result, catalog, nunchaku).as_yaml(), nl=False)
    elif as_json:
        click.echo(dumps(versioned(result.as_json())))
    else:
        click.echo(render(result))
    sys.exit(EXIT_LACKS if result.lacks else EXIT_OK)


@workflow.command("import")
@click.argument("workflow_file", metavar="WORKFLOW", type=path_argument)
@click.argument("manifest_path", metavar="MANIFEST", type=path_argument)
@click.option("--nunchaku", is_flag=True, help="Add the suggested Nunchaku files instead of the plain ones.")
@click.option("--facts", "facts_path", type=path_argument, help="Host facts (JSON) the suggestions are for.")
def import_command(workflow_file: Path, manifest_path: Path, nunchaku: bool, facts_path: Path | None) -> None:
    """Add the plugins and model files WORKFLOW needs to MANIFEST (the rest of the file is kept as written)."""
    try:
        catalog = load_catalog()
        manifest = load_manifest(manifest_path).manifest
        result = analyze(load_workflow(workflow_file), catalog, _host(catalog, manifest, facts_path, None))
        new = sections(result, catalog, nunchaku)
        done = import_sections(manifest_path, new, catalog)
    except ProvisionError as exc:
        _fail(exc)
        return
    for name in done.added_plugins:
        click.echo(f"+ plugin {name}")
    for name in done.added_models:
        click.echo(f"+ model {name}")
    for name in done.already:
        click.echo(f"= {name} (already in the manifest)")
    for note in new.skipped:
        click.echo(f"! not added: {note}")
    if not done.added_plugins and not done.added_models:
        click.echo(f"{manifest_path}: nothing to add")


def render(result: Analysis) -> str:
    lines = [f"{result.workflow} ({result.format} format)", "", "Nodes:"]
    for use in result.nodes:
        count = f" ×{use.count}" if use.count > 1 else ""
        lines.append(f"  {use.class_type}{count}  [{use.provider}] {use.detail}")
    lines += ["", "Model files:"]
    for model in result.models or []:
        state = "" if model.active else " (node muted/bypassed)"
        origin = "" if model.source == "widget" else " (from the node's metadata only)"
        lines.append(f"  {model.folder}/{model.name}  ← {model.class_type} #{model.node}{state}{origin}")
        if model.url:
            lines.append(f"      {model.url}")
    if not result.models:
        lines.append("  none")
    if result.comfyui_min:
        lines += ["", f"ComfyUI: {result.comfyui_min} or newer ({result.comfyui_min_why})"]
    for r in result.replacements:
        lines += ["", f"Nunchaku replacement for {r.replaces} {r.replaces_file}:",
                  f"  {r.node} ({r.plugin} {', '.join(r.plugin_versions[:1])} or newer) loading "
                  f"{r.folder}/{r.file}", f"  from {r.repo} ({r.model}); cpu_offload: {r.cpu_offload} "
                  f"({r.why_offload})", f"  expected memory: {r.expected_memory}"]
        if r.merged_loras:
            lines.append(f"  has {', '.join(r.merged_loras)} merged in: bypass that LoRA loader")
        if r.note:
            lines.append(f"  note: {r.note}")
    if result.manifest:
        lines += ["", f"{result.manifest} lacks:" if result.lacks else f"{result.manifest} has everything it needs."]
        lines += [f"  [{lack.kind}] {lack.what}\n      fix: {lack.fix}" for lack in result.lacks]
    return "\n".join(lines)
