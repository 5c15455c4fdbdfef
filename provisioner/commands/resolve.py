"""`provision resolve MANIFEST [--facts FILE] [--json]`: show what would be installed on a host, or why not."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from provisioner import redaction
from provisioner.catalog import load_catalog
from provisioner.errors import ProvisionError
from provisioner.facts import load_facts
from provisioner.manifest import load_manifest
from provisioner.preflight import live_facts
from provisioner.render.json_output import dumps, versioned
from provisioner.resolve import render_resolution, resolve

EXIT_RESOLVED, EXIT_VIOLATIONS = 0, 1


@click.command("resolve")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--facts",
    "facts_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Host facts saved as JSON; resolves offline without contacting the host.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the resolution as JSON.")
def resolve_command(manifest: Path, facts_path: Path | None, as_json: bool) -> None:
    """Pick torch, the nunchaku wheel, ComfyUI-nunchaku, ComfyUI and model files for a host.

    Exits 0 when everything resolves and 1 when there are violations (all are listed, each with a fix).
    """
    try:
        loaded = load_manifest(manifest)
        facts = load_facts(facts_path) if facts_path else live_facts(loaded.manifest)
        result = resolve(loaded.manifest, facts, load_catalog())
    except ProvisionError as exc:
        click.secho(redaction.redact(f"error: {exc}"), fg="red", err=True)
        sys.exit(EXIT_VIOLATIONS)
    if as_json:
        click.echo(dumps(versioned(result.model_dump(mode="json"))))
    else:
        click.echo(render_resolution(result, loaded.manifest.name))
    sys.exit(EXIT_RESOLVED if result.ok else EXIT_VIOLATIONS)
