"""The `provision` command line."""

from __future__ import annotations

import datetime
import importlib
import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import click
from pydantic import ValidationError

from provisioner import __version__, redaction
from provisioner.agent_client import AgentClient
from provisioner.engine import ApplyReport, HostSession, RunOptions
from provisioner.errors import ProvisionError
from provisioner.expand import expand
from provisioner.ledger import Ledger, default_ledger_path, ledger_path_from_url
from provisioner.ledger_run import LedgerRun, interrupt_on_sigterm
from provisioner.manifest import load_manifest
from provisioner.manifest.model import Manifest, Target
from provisioner.render.json_output import (
    apply_output,
    emit_json,
    generations_output,
    history_output,
    plan_output,
    versioned,
)
from provisioner.render.progress import ApplyProgress
from provisioner.render.reports import show_apply, show_plan
from provisioner.render.terminal import quiet_option
from provisioner.report import Masker
from provisioner.rootlock import lock_timeout_option
from provisioner.stack import needs_resolution
from provisioner.target_options import TargetOverride, target_options
from provisioner.transport import ConnectOptions, open_transport
from provisioner.usage import UsageErrorsExit1

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 1, 2


def user_errors(func: F) -> F:
    """Print ProvisionErrors as plain messages with exit 1; anything else is a bug and keeps its traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ProvisionError as exc:
            click.secho(redaction.redact(f"error: {exc}"), fg="red", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


manifest_argument = click.argument("manifest", type=click.Path(path_type=Path))


def connect_options(func: F) -> F:
    """--trust-new-hosts / --known-hosts for commands that connect to a host."""
    func = click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
                        help="known_hosts file to check host keys against "
                        "(default: $PROVISION_KNOWN_HOSTS, else ~/.ssh/known_hosts).")(func)
    func = click.option("--trust-new-hosts", is_flag=True,
                        help="Record the key of a host seen for the first time "
                        "(a changed key is always refused).")(func)
    return func


def _connect(trust_new_hosts: bool, known_hosts: Path | None, verbose: bool = False) -> ConnectOptions:
    return ConnectOptions(trust_new_hosts=trust_new_hosts, known_hosts=known_hosts, verbose=verbose)


class LazyGroup(UsageErrorsExit1):
    """Commands with heavy imports (catalog, fleet, checks, lock) load only when they are run, so a
    plain `plan`/`apply` starts fast."""

    LAZY: ClassVar[dict[str, str]] = {
        "check": "provisioner.commands.check:check",
        "fleet": "provisioner.commands.fleet:fleet",
        "init": "provisioner.commands.init:init_command",
        "lock": "provisioner.commands.lock:lock_command",
        "resolve": "provisioner.commands.resolve:resolve_command",
        "snapshot": "provisioner.commands.snapshot:snapshot_group",
        "verify": "provisioner.commands.verify:verify",
        "workflow": "provisioner.commands.workflow:workflow",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            module_name, attribute = self.LAZY[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module_name), attribute)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provision")
@click.option("--ledger", "ledger_url", envvar="PROVISION_LEDGER", default=None,
              help="Run ledger (sqlite:///PATH); default ~/.local/state/provision/ledger.sqlite.")
@click.pass_context
def cli(ctx: click.Context, ledger_url: str | None) -> None:
    """Make GPU hosts match a ComfyUI + Nunchaku manifest: plan, apply, check."""
    ctx.obj = {"ledger_url": ledger_url}


def current_ledger() -> Ledger:
    """The ledger chosen with --ledger / PROVISION_LEDGER, opened on first use."""
    ctx = click.get_current_context()
    url = (ctx.find_root().obj or {}).get("ledger_url")
    return Ledger(ledger_path_from_url(url) if url else default_ledger_path())


def ledger_run(command: str, session: HostSession) -> LedgerRun:
    """The run in the ledger, recorded as running until it ends (see LedgerRun)."""
    manifest = session.loaded.manifest
    return LedgerRun(current_ledger(), command, manifest.name, manifest.target.connection,
                     mask=lambda text: Masker(session.secrets)(text))


@cli.command()
@manifest_argument
@user_errors
def validate(manifest: Path) -> None:
    """Validate MANIFEST (and its roles and templates) without contacting the host."""
    loaded = load_manifest(manifest)
    context = None
    if needs_resolution(loaded.manifest):
        from provisioner.catalog import load_catalog
        from provisioner.facts import Facts
        from provisioner.resolve import resolve
        from provisioner.stack import stack_context

        # Without the host, resolve for the GPU the manifest declares on a bare x86_64 Linux host, so
        # roles and templates are still rendered and checked.
        facts = Facts.model_validate({"arch": "x86_64"})
        resolution = resolve(loaded.manifest, facts, load_catalog())
        if not resolution.ok:
            click.echo(f"{manifest}: valid; roles are checked at plan time, against the host's facts "
                       f"(offline: {resolution.violations[0].reason})")
            return
        context = {"resolved": resolution.model_dump(mode="json"), "facts": facts.model_dump(mode="json"),
                   "stack": stack_context(loaded.manifest, resolution)}
    resources = expand(loaded, environ=_validation_environ(loaded.manifest), extra_context=context).resources
    click.echo(f"{manifest}: valid ({len(resources)} resources)")


def _validation_environ(manifest: Manifest) -> dict[str, str]:
    """Validation must not need the secrets themselves: stand in a placeholder for each."""
    environ = dict(os.environ)
    for source in manifest.secrets.values():
        environ.setdefault(source.from_env, "placeholder")
    for resource in manifest.resources:
        for source in getattr(resource, "secrets", {}).values():
            environ.setdefault(source.from_env, "placeholder")
    return environ


@cli.command()
def schema() -> None:
    """Print the manifest JSON Schema (for editor completion)."""
    click.echo(json.dumps(Manifest.model_json_schema(), indent=2))


@cli.command()
@manifest_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--deep", is_flag=True, help="Re-hash large files instead of trusting the stat cache.")
@click.option("--changes-only", is_flag=True, help="Hide resources that are ok.")
@click.option("-o", "--out", "out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Save the plan to this file; `provision apply PLANFILE` applies exactly it.")
@click.option("--prune", is_flag=True, help="Also remove large data (models) the manifest dropped.")
@connect_options
@target_options
@quiet_option
@user_errors
def plan(manifest: Path, as_json: bool, deep: bool, changes_only: bool, out: Path | None, prune: bool,
         trust_new_hosts: bool, known_hosts: Path | None, target_override: TargetOverride) -> None:
    """Show how the host differs from MANIFEST (exit 0: none, 2: drift, 1: error)."""
    options = RunOptions(deep=deep, connect=_connect(trust_new_hosts, known_hosts), prune=prune,
                         ledger=current_ledger().path)
    if out is not None and target_override:
        # A saved plan is applied from its manifest alone; it must name the host it was made for.
        raise ProvisionError("-o saves a plan of a manifest as written: put the target in the manifest "
                             "instead of --target, -i or --root")
    sys.exit(_plan(manifest, as_json, options, changes_only, out, target_override))


def _plan(manifest: Path, as_json: bool, options: RunOptions, changes_only: bool = False,
          out: Path | None = None, target_override: TargetOverride | None = None) -> int:
    session = HostSession((target_override or TargetOverride()).load(manifest), options)
    with ledger_run("plan", session) as run:
        report = session.plan()
        mask = Masker(session.secrets)
        if as_json:
            emit_json(plan_output(report), mask)
        else:
            show_plan(report, mask, show_ok=not changes_only)
        if out is not None:
            from provisioner.planfile import save_plan

            save_plan(out, session, report)
            click.echo(f"Saved the plan to {out}; `provision apply {out}` applies exactly it.", err=as_json)
        run.finish(report.exit_code(), manifest=report.manifest, host=report.host, changed=len(report.pending),
                   summary=report.as_json()["summary"])
    return report.exit_code()


@cli.command()
@manifest_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--dry-run", is_flag=True, help="Only show the plan (same as `provision plan`).")
@click.option("--force", is_flag=True, help="Discard local modifications in git checkouts.")
@click.option("--deep", is_flag=True, help="Re-hash large files instead of trusting the stat cache.")
@click.option("-v", "--verbose", is_flag=True, help="Stream the output of the programs the agent runs.")
@click.option("--prune", is_flag=True, help="Also remove large data (models) the manifest dropped.")
@click.option("--download-cache", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Fetch downloads once into this directory on this machine and push them to the host "
              "(for hosts without internet, or many hosts).")
@click.option("--parallel", type=click.IntRange(min=1), default=None, metavar="N",
              help="Steps run at once on the host, where they do not depend on each other (default 6; 1: one "
              "after another).")
@click.option("--parallel-downloads", type=click.IntRange(min=1), default=None, metavar="N",
              help="Of those, downloads at once (default 4).")
@lock_timeout_option
@connect_options
@target_options
@quiet_option
@user_errors
def apply(manifest: Path, as_json: bool, dry_run: bool, force: bool, deep: bool, verbose: bool, prune: bool,
          download_cache: Path | None, parallel: int | None, parallel_downloads: int | None, lock_timeout: float,
          trust_new_hosts: bool, known_hosts: Path | None, target_override: TargetOverride) -> None:
    """Apply only what differs from MANIFEST, run notified handlers once, then re-probe. MANIFEST may be
    a plan saved by `plan -o`: then exactly its changes are applied, or nothing if the host moved since."""
    options = RunOptions(force=force, deep=deep, verbose=verbose, ledger=current_ledger().path,
                         connect=_connect(trust_new_hosts, known_hosts, verbose),
                         download_cache=download_cache.expanduser() if download_cache else None,
                         lock_timeout=lock_timeout, prune=prune, parallel=parallel,
                         parallel_downloads=parallel_downloads)
    guard = None
    if _is_plan_file(manifest):
        from provisioner.planfile import open_saved_plan

        if dry_run:
            raise ProvisionError(f"{manifest} is a saved plan: --dry-run takes a manifest")
        if target_override:
            raise ProvisionError(f"{manifest} is a saved plan: it names its host; --target, -i and --root "
                                 "apply to a manifest")
        loaded, options, guard = open_saved_plan(manifest, options)
    elif dry_run:
        sys.exit(_plan(manifest, as_json, options, target_override=target_override))
    else:
        loaded = target_override.load(manifest)
    session = HostSession(loaded, options)
    # The secrets are known once the stack is expanded, inside apply: mask with the current list.
    progress = ApplyProgress(lambda text: Masker(session.secrets)(text), verbose=verbose, enabled=not as_json)
    with ledger_run("apply", session) as run:
        with progress:
            report = session.apply(progress.on_event, guard)
        _finish_apply(run, session, report, as_json)


def _is_plan_file(path: Path) -> bool:
    from provisioner.planfile import is_plan_file

    return path.suffix.lower() not in (".yaml", ".yml") and is_plan_file(path)


def _finish_apply(run: LedgerRun, session: HostSession, report: ApplyReport, as_json: bool) -> None:
    """Print an apply-shaped report (apply, rollback), record it in the ledger, exit with its code."""
    mask = Masker(session.secrets)
    if as_json:
        emit_json(apply_output(report), mask)
    else:
        if report.rollback_to is not None:
            click.echo(f"Rolled back to generation {report.rollback_to}.")
        show_apply(report, mask)
    summary = report.as_json()["summary"]
    run.finish(report.exit_code(), manifest=report.manifest, host=report.host, changed=summary.get("changed", 0),
               generation=report.generation, summary=summary)
    sys.exit(report.exit_code())


@cli.command()
@manifest_argument
@click.option("--to", "to", type=int, default=None, help="Generation to return to (default: the previous one).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@lock_timeout_option
@connect_options
@quiet_option
@user_errors
def rollback(manifest: Path, to: int | None, as_json: bool, lock_timeout: float, trust_new_hosts: bool,
             known_hosts: Path | None) -> None:
    """Return the host to an earlier generation (git checkouts, packages, files, env); models are kept."""
    options = RunOptions(connect=_connect(trust_new_hosts, known_hosts), ledger=current_ledger().path,
                         lock_timeout=lock_timeout)
    session = HostSession(load_manifest(manifest), options)
    # Like apply: per-resource progress, and whom a run waiting for the root lock waits for.
    progress = ApplyProgress(lambda text: Masker(session.secrets)(text), verbose=False, enabled=not as_json)
    with ledger_run("rollback", session) as run:
        with progress:
            report = session.rollback(to, progress.on_event)
        _finish_apply(run, session, report, as_json)


@cli.command()
@manifest_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@connect_options
@user_errors
def generations(manifest: Path, as_json: bool, trust_new_hosts: bool, known_hosts: Path | None) -> None:
    """List the generations recorded on the host for MANIFEST's target root."""
    loaded = load_manifest(manifest)
    target = loaded.manifest.target
    with open_transport(target, _connect(trust_new_hosts, known_hosts)) as transport:
        result = AgentClient(transport, python=target.python).call("generations", {"root": target.root})
    records = [g for g in result["generations"] if g]
    if as_json:
        emit_json(generations_output(records))
        return
    if not records:
        click.echo("No generations recorded yet.")
    for record in records:
        when = datetime.datetime.fromtimestamp(record["time"]).isoformat(timespec="seconds")
        changed = sum(1 for c in record["changes"] if c.get("outcome") == "changed")
        click.echo(f"{record['generation']:>4}  {when}  {record['status']:<6}  {changed} changed  "
                   f"{record['manifest'].get('name', '?')}")


@cli.command()
@click.argument("target")
@click.option("--root", default=None, help="Target root to report disk space and the venv for.")
@click.option("--venv", default=None, help="Venv (relative to the root) whose torch/nunchaku to report.")
@connect_options
@user_errors
def facts(target: str, root: str | None, venv: str | None, trust_new_hosts: bool, known_hosts: Path | None) -> None:
    """Print a host's facts as JSON, in one round trip. TARGET: a manifest file or a connection
    ('local', 'ssh://user@host:port', 'docker://CONTAINER')."""
    if Path(target).is_file():
        manifest = load_manifest(Path(target)).manifest
        connection = manifest.target
        root = root or manifest.target.root
        venv = venv or manifest.python.adopt or manifest.python.venv
    else:
        try:
            connection = Target(connection=target)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ProvisionError(f"{target!r} is neither a manifest file nor a valid connection: {reason}") from None
    request = {"root": root or connection.root, "venv": venv}
    with open_transport(connection, _connect(trust_new_hosts, known_hosts)) as transport:
        result = AgentClient(transport, python=connection.python).call("facts", request)
    emit_json(versioned(result))


@cli.command()
@click.argument("host", required=False)
@click.option("--limit", default=30, show_default=True, help="How many runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def history(host: str | None, limit: int, as_json: bool) -> None:
    """Show the run ledger: every plan/apply/check, newest first (optionally for one HOST)."""
    entries = current_ledger().history(host, limit)
    if as_json:
        emit_json(history_output([e.as_json() for e in entries]))
        return
    if not entries:
        click.echo("No runs recorded" + (f" for {host}." if host else "."))
    for entry in entries:
        when = datetime.datetime.fromtimestamp(entry.started).isoformat(timespec="seconds")
        generation = f" gen {entry.generation}" if entry.generation else ""
        error = str((entry.summary or {}).get("error") or "").strip().splitlines()
        reason = f"  {error[0][:120]}" if error else ""
        click.echo(f"{when}  {entry.command:<8} {entry.status:<11} {entry.host:<24} {entry.manifest:<16} "
                   f"{entry.changed:>3} changed{generation}  ({entry.seconds:.2f}s){reason}")


def main() -> None:
    interrupt_on_sigterm()
    cli()
