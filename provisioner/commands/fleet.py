"""`provision fleet plan|apply FLEET.yaml`: drift across many hosts, and safe rollouts to them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from provisioner import redaction
from provisioner.engine import RunOptions
from provisioner.errors import ProvisionError
from provisioner.fleet.inventory import load_inventory
from provisioner.fleet.planner import FleetPlan
from provisioner.fleet.report import (
    apply_headline,
    plan_json,
    render_apply_summary,
    render_plan_markdown,
    render_plan_table,
)
from provisioner.fleet.report_html import render_plan_html
from provisioner.fleet.runner import FleetApply, FleetOptions
from provisioner.fleet.sessions import PreparedHost
from provisioner.launcher import collect_from_here
from provisioner.ledger import Ledger
from provisioner.render.fleet_progress import FleetProgress
from provisioner.render.json_output import dumps, versioned
from provisioner.render.terminal import is_quiet, quiet_option
from provisioner.report import Masker
from provisioner.rootlock import lock_timeout_option
from provisioner.transport import ConnectOptions

inventory_argument = click.argument("inventory", type=click.Path(path_type=Path, dir_okay=False))


def _ledger() -> Ledger:
    # Imported here: provisioner.cli imports this module while it registers commands.
    from provisioner.cli import current_ledger

    return current_ledger()


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--limit", default=None, help="Only these hosts: names, group names or globs, comma-separated; "
                     "'!pattern' excludes."),
        click.option("--forks", type=click.IntRange(1, 1000), default=None,
                     help="Hosts worked on at once (default: rollout.forks, 10)."),
        click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
                     help="known_hosts file to check host keys against (default: ~/.ssh/known_hosts)."),
        click.option("--trust-new-hosts", is_flag=True,
                     help="Record the key of a host seen for the first time (a changed key is always refused)."),
    ]):
        func = option(func)
    return func


def _fail(exc: ProvisionError) -> None:
    click.secho(redaction.redact(f"error: {exc}"), fg="red", err=True)
    sys.exit(1)


def _masker(prepared: list[PreparedHost]) -> Masker:
    return Masker([s for p in prepared for s in p.session.secrets])


@click.group("fleet")
def fleet() -> None:
    """Plan and roll out manifests across the hosts of an inventory (fleet.yaml)."""


@fleet.command("plan")
@inventory_argument
@_common
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md", "html"]), default="table",
              show_default=True, help="Output format.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the report to this file instead of stdout.")
@click.option("--changes-only", is_flag=True, help="Table: hide hosts without drift.")
def plan_command(inventory: Path, limit: str | None, forks: int | None, known_hosts: Path | None,
                 trust_new_hosts: bool, fmt: str, as_json: bool, output: Path | None, changes_only: bool) -> None:
    """Fleet-wide drift: hosts × areas (exit 0: none, 2: drift, 1: a host failed or is unreachable)."""
    try:
        loaded = load_inventory(inventory)
        options = FleetOptions(forks=forks, run=RunOptions(connect=ConnectOptions(trust_new_hosts, known_hosts)))
        planner = FleetPlan(loaded, loaded.select(limit), _ledger(), options)
        collect_from_here()  # every host is expanded; what follows is per-host work that makes garbage
        result = planner.run()
    except ProvisionError as exc:
        _fail(exc)
        return
    fmt = "json" if as_json else fmt
    if fmt == "json":
        text = dumps(plan_json(result)) + "\n"
    elif fmt == "md":
        text = render_plan_markdown(result)
    elif fmt == "html":
        text = render_plan_html(result)
    else:
        text = render_plan_table(result, changes_only) + "\n"
    text = _masker(planner.prepared)(text)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
    sys.exit(result.exit_code())


@fleet.command("apply")
@inventory_argument
@_common
@click.option("--resume", is_flag=True, help="Continue the last rollout of this inventory; hosts it finished "
              "(with the same desired state) are skipped.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Also show the output of the programs run on each host.")
@click.option("--download-cache", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Fetch each download once into this directory on this machine and push it to the hosts "
              "(overrides the inventory's download_cache).")
@lock_timeout_option
@quiet_option
def apply_command(inventory: Path, limit: str | None, forks: int | None, known_hosts: Path | None,
                  trust_new_hosts: bool, resume: bool, as_json: bool, verbose: bool,
                  download_cache: Path | None, lock_timeout: float) -> None:
    """Roll the inventory's manifests out: canary, batches, max-fail, gates, rollback (exit 0 / 1)."""
    try:
        loaded = load_inventory(inventory)
        options = FleetOptions(forks=forks, resume=resume,
                               run=RunOptions(verbose=verbose, ledger=_ledger().path,
                                              connect=ConnectOptions(trust_new_hosts, known_hosts, verbose),
                                              download_cache=download_cache.expanduser() if download_cache
                                              else None, lock_timeout=lock_timeout))
        progress = FleetProgress(enabled=not as_json, verbose=verbose)
        runner = FleetApply(loaded, loaded.select(limit), _ledger(), options, on_progress=progress)
        collect_from_here()  # every host is expanded; what follows is per-host work that makes garbage
        with progress.start([p.name for p in runner.prepared]):
            result = runner.run()
    except ProvisionError as exc:
        _fail(exc)
        return
    mask = _masker(runner.prepared)
    if as_json:
        click.echo(mask(dumps(versioned(result.as_json()))))
    else:
        click.echo(mask(apply_headline(result) if is_quiet() else render_apply_summary(result)))
        if result.aborted and is_quiet():
            click.secho(mask(f"error: aborted: {result.aborted}"), fg="red", err=True)
        if not is_quiet():
            click.echo(f"Logs: {runner.log_dir}", err=True)
    sys.exit(result.exit_code())
