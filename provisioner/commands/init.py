"""`provision init [TARGET]`: read a host's facts and write a starter manifest that resolves for it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from provisioner import redaction
from provisioner.agent_client import AgentClient
from provisioner.catalog import load_catalog
from provisioner.errors import ProvisionError
from provisioner.facts import Facts, load_facts
from provisioner.manifest.model import PythonSpec, Target
from provisioner.starter import starter_manifest
from provisioner.target_options import TargetOverride
from provisioner.transport import ConnectOptions, open_transport

BASE_ROOT = "/opt/comfy"  # the built-in base's root, used where neither --root nor TARGET says otherwise


@click.command("init")
@click.argument("target", required=False, default="local")
@click.option("-i", "--identity", "identity_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="SSH private key to log in with.")
@click.option("--root", default=BASE_ROOT, show_default=True, metavar="DIR",
              help="Target root on the host (its free disk decides which models fit).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=Path("provision.yaml"),
              show_default=True, help="Where to write the manifest.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--model", "model_id", default=None, help="Catalog model to install (default: the first that fits).")
@click.option("--facts", "facts_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Host facts saved as JSON (`provision facts`): write the manifest offline.")
@click.option("--trust-new-hosts", is_flag=True,
              help="Record the key of a host seen for the first time (a changed key is always refused).")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
              help="known_hosts file to check host keys against (default: ~/.ssh/known_hosts).")
def init_command(target: str, identity_file: Path | None, root: str, output: Path, force: bool,
                 model_id: str | None, facts_path: Path | None, trust_new_hosts: bool,
                 known_hosts: Path | None) -> None:
    """Write a starter manifest for TARGET (local, ssh://user@host[:port], docker://NAME) from its facts:
    the built-in base, the GPU's arch, and a catalog model that fits its GPU memory and disk."""
    try:
        written = _init(target, identity_file, root, output, force, model_id, facts_path,
                        ConnectOptions(trust_new_hosts=trust_new_hosts, known_hosts=known_hosts))
    except ProvisionError as exc:
        click.secho(redaction.redact(f"error: {exc}"), fg="red", err=True)
        sys.exit(1)
    click.echo(written)


def _init(target: str, identity_file: Path | None, root: str, output: Path, force: bool, model_id: str | None,
          facts_path: Path | None, connect: ConnectOptions) -> str:
    if output.exists() and not force:
        raise ProvisionError(f"{output} exists: pass --force to overwrite it, or -o to write elsewhere")
    connection = TargetOverride(target, identity_file, root).target()
    facts = load_facts(facts_path) if facts_path else _live_facts(connection, connect)
    starter = starter_manifest(facts, connection, load_catalog(), model_id)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(starter.text(), encoding="utf-8")
    lines = [starter.summary, *starter.notes, f"Wrote {output}; next: provision plan {output}"]
    return "\n".join(lines)


def _live_facts(connection: Target, connect: ConnectOptions) -> Facts:
    """One round trip, as plan and apply gather them (the venv the base manifest creates)."""
    request = {"root": connection.root, "venv": PythonSpec().venv}
    with open_transport(connection, connect) as transport:
        result = AgentClient(transport, python=connection.python, timeout=connection.connect_timeout * 6).call(
            "facts", request)
    return Facts.model_validate(result)

