"""`provision check MANIFEST`: prove on the host that the GPU, the kernels and ComfyUI work."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from provisioner import redaction
from provisioner.agent_client import AgentClient
from provisioner.checks.model import EXIT_ERROR, CheckReport
from provisioner.checks.report import render_json, render_text, write_junit
from provisioner.checks.request import CheckPlan, plan_instance_checks, selected_groups
from provisioner.checks.runner import run_instance_checks
from provisioner.errors import ProvisionError
from provisioner.lock import use_lock
from provisioner.manifest import LoadedManifest, load_manifest
from provisioner.preflight import PreflightError, gather_facts, resolve_or_refuse
from provisioner.resolve import Resolution
from provisioner.resolve.no_gpu import no_gpu_message, refused_without_gpu
from provisioner.stack import needs_resolution
from provisioner.target_options import TargetOverride, target_options
from provisioner.transport import ConnectOptions, Transport, open_transport


def _groups(value: str | None) -> list[str] | None:
    return [g.strip() for g in value.split(",") if g.strip()] if value else None


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--junit", type=click.Path(path_type=Path, dir_okay=False), help="Also write a JUnit XML report.")
@click.option("--only", metavar="GROUPS", help="Comma-separated check groups: gpu, kernels, smoke.")
@click.option("--use-running", is_flag=True,
              help="Smoke-test the running ComfyUI service (service.listen:port) instead of starting one.")
@click.option("--trust-new-hosts", is_flag=True,
              help="Record the key of a host seen for the first time (a changed key is always refused).")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
              help="known_hosts file to check host keys against (default: ~/.ssh/known_hosts).")
@target_options
def check(manifest: Path, as_json: bool, junit: Path | None, only: str | None, use_running: bool,
          trust_new_hosts: bool, known_hosts: Path | None, target_override: TargetOverride) -> None:
    """Run the on-host checks for MANIFEST (exit 0: all passed, 2: a check failed, 1: error)."""
    try:
        report = _run(manifest, only, use_running, ConnectOptions(trust_new_hosts=trust_new_hosts,
                                                                   known_hosts=known_hosts), quiet=as_json,
                      target_override=target_override)
    except ProvisionError as exc:
        click.secho(redaction.redact(f"error: {exc}"), fg="red", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(redaction.redact(render_json(report) if as_json else render_text(report)))
    if junit:
        write_junit(report, junit)
    sys.exit(report.exit_code())


def plan_for_host(loaded: LoadedManifest, transport: Transport, only: list[str] | None = None,
                  use_running: bool = False) -> CheckPlan:
    """The check plan of the first (or only) ComfyUI instance; see plans_for_host."""
    return plans_for_host(loaded, transport, only, use_running)[0]


def plans_for_host(loaded: LoadedManifest, transport: Transport, only: list[str] | None = None,
                   use_running: bool = False) -> list[CheckPlan]:
    """The check plans, one per ComfyUI instance, with the stack resolved as plan and apply resolve it (the
    host's facts in one round trip, the resolver, the lock and mirrors), so the smoke test runs ComfyUI as
    the service does."""
    manifest = loaded.manifest
    groups, _disabled = selected_groups(manifest, only)
    resolution: Resolution | None = None
    refused: str | None = None
    if groups:
        client = AgentClient(transport, python=manifest.target.python, timeout=manifest.target.command_timeout)
        facts = gather_facts(client, manifest)
        # Told as plan and apply tell it, before any check runs: every check would only skip or fail.
        if needs_resolution(manifest) and refused_without_gpu(manifest.gpu.arch, manifest.gpu.allow_cpu,
                                                              manifest.cuda.version, len(facts.nvidia.gpus)):
            raise ProvisionError(no_gpu_message(transport.display))
    if "smoke" in groups:
        try:
            resolution, _notes = use_lock(loaded, resolve_or_refuse(manifest, facts, transport.display))
        except PreflightError as exc:
            refused = f"ComfyUI's command line is not known, since {exc}"
    return plan_instance_checks(manifest, loaded.directory, only, use_running, resolution=resolution,
                                refused=refused)


def _run(path: Path, only: str | None, use_running: bool, options: ConnectOptions, quiet: bool,
         target_override: TargetOverride | None = None) -> CheckReport:
    loaded = (target_override or TargetOverride()).apply(load_manifest(path))
    manifest = loaded.manifest
    selected_groups(manifest, _groups(only))  # a bad --only is refused before connecting

    def progress(check_id: str) -> None:
        if not quiet:
            click.echo(f"  … {check_id}", err=True)

    with open_transport(manifest.target, options) as transport:
        plans = plans_for_host(loaded, transport, _groups(only), use_running)
        results = run_instance_checks(transport, plans, manifest.target.python,
                                      timeout=manifest.target.command_timeout, on_progress=progress)
        host = transport.display
    return CheckReport(manifest=str(path), host=host, python=plans[0].venv_python, results=results)
