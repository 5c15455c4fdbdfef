"""`provision verify MANIFEST`: pytest-testinfra tests of the host, generated from the manifest's resources."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from provisioner import redaction
from provisioner.agent_client import AgentClient
from provisioner.errors import ProvisionError
from provisioner.expand import Expansion, expand
from provisioner.lock.mirrors import find_mirrors_file, load_mirrors
from provisioner.manifest import LoadedManifest, load_manifest
from provisioner.stack import needs_resolution
from provisioner.transport import ConnectOptions, open_transport
from provisioner.transport.ssh_hostkeys import known_hosts_path
from provisioner.verify.cases import cases_for
from provisioner.verify.run import EXIT_ERROR, VerifyResult, run_suite
from provisioner.verify.suite import DATA_FILE, SshLogin, VerifyError, host_spec, write_suite


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--junit", type=click.Path(path_type=Path, dir_okay=False), help="Write a JUnit XML report here.")
@click.option("--keep", "--emit", "keep", type=click.Path(path_type=Path, file_okay=False),
              help="Write the generated tests into DIR (rerun them with `cd DIR && python -m pytest`).")
@click.option("--deep", is_flag=True, help="Also compare each model file's sha256 (reads every byte).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--trust-new-hosts", is_flag=True,
              help="Record the key of a host seen for the first time (a changed key is always refused).")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
              help="known_hosts file to check host keys against "
              "(default: $PROVISION_KNOWN_HOSTS, else ~/.ssh/known_hosts).")
def verify(manifest: Path, junit: Path | None, keep: Path | None, deep: bool, as_json: bool,
           trust_new_hosts: bool, known_hosts: Path | None) -> None:
    """Test the host against MANIFEST with pytest-testinfra (exit 0: all passed, 2: a test failed, 1: error)."""
    options = ConnectOptions(trust_new_hosts=trust_new_hosts, known_hosts=known_hosts)
    try:
        result = _verify(manifest, options, keep, junit, deep)
    except ProvisionError as exc:
        click.secho(redaction.redact(f"error: {exc}"), fg="red", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(redaction.redact(json.dumps(result.as_json(), indent=2) if as_json else _render(result, keep)))
    sys.exit(result.exit_code())


def _verify(path: Path, options: ConnectOptions, keep: Path | None, junit: Path | None, deep: bool) -> VerifyResult:
    loaded = load_manifest(path)
    if keep is not None:
        _check_keep(keep)
    expansion, root = _expand_on_host(loaded, options)
    target = loaded.manifest.target
    login = None
    if target.connection.startswith("ssh://"):
        login = SshLogin(known_hosts_path(options.known_hosts),
                         Path(target.identity_file).expanduser() if target.identity_file else None,
                         target.connect_timeout)
    cases = cases_for(expansion.resources, root, target.python, deep)
    with tempfile.TemporaryDirectory(prefix="provision-verify-") as scratch:
        folder = (keep or Path(scratch)).resolve()
        host = host_spec(target, folder, login)
        module = write_suite(folder, host, root, loaded.manifest.name, cases, login)
        return run_suite(folder, module, (junit or Path(scratch) / "junit.xml").resolve())


def _expand_on_host(loaded: LoadedManifest, options: ConnectOptions) -> tuple[Expansion, str]:
    """The resources exactly as plan and apply expand them (stack resolved against the host's facts, lock,
    mirrors), and the host's absolute target root; one read-only round trip."""
    from provisioner.preflight import gather_facts

    manifest = loaded.manifest
    if manifest.target.connection.startswith("docker-image://"):
        host_spec(manifest.target, Path("."), None)  # refuses, with the reason
    mirrors = load_mirrors(find_mirrors_file(loaded.path))
    with open_transport(manifest.target, options) as transport:
        client = AgentClient(transport, python=manifest.target.python, timeout=manifest.target.command_timeout)
        facts = gather_facts(client, manifest)
        if needs_resolution(manifest):
            from provisioner.engine import expand_stack
            from provisioner.preflight import resolve_or_refuse

            resolution = resolve_or_refuse(manifest, facts, transport.display, loaded.source)
            expansion = expand_stack(loaded, facts, resolution, mirrors).expansion
        else:
            expansion = expand(loaded, mirrors=mirrors)
    if not facts.root:
        raise ProvisionError(f"{manifest.target.connection}: the host did not report its target root")
    return expansion, facts.root


def _check_keep(folder: Path) -> None:
    """--keep writes into an empty folder or one an earlier verify wrote, never over someone's files."""
    if folder.exists() and any(folder.iterdir()) and not (folder / DATA_FILE).is_file():
        raise VerifyError(f"--keep {folder}: the folder has files that verify did not write; name an empty or new "
                          "folder")


def _render(result: VerifyResult, keep: Path | None) -> str:
    lines = []
    for test in result.tests:
        mark = {"passed": "✓", "failed": "✗", "error": "!", "skipped": "-"}[test.outcome]
        first = test.message.splitlines()[0] if test.message else ""
        lines.append(f"  {mark} {test.name}" + (f"\n      {first}" if test.outcome != "passed" and first else ""))
    counts = ", ".join(f"{len(result.named(o))} {o}" for o in ("passed", "failed", "error") if result.named(o))
    lines.append(counts or "no tests ran")
    if not result.tests:
        lines.append(result.output[-2000:])
    if keep is not None:
        lines.append(f"Tests written to {keep} (rerun: cd {keep} && python -m pytest)")
    return "\n".join(lines)
