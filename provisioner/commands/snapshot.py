"""`provision snapshot import|export`: ComfyUI-Manager snapshots to manifest pins and back."""

from __future__ import annotations

from pathlib import Path

import click

from provisioner.catalog import load_catalog
from provisioner.cli import user_errors
from provisioner.errors import ProvisionError
from provisioner.manifest import load_manifest
from provisioner.snapshot.exporter import host_facts, snapshot_of
from provisioner.snapshot.format import check_snapshot_path, dump_snapshot, load_snapshot
from provisioner.snapshot.importer import import_snapshot
from provisioner.snapshot.manifest_out import overlay_manifest, standalone_manifest
from provisioner.usage import UsageErrorsExit1

file_path = click.Path(path_type=Path, dir_okay=False)


@click.group("snapshot", cls=UsageErrorsExit1)
def snapshot_group() -> None:
    """ComfyUI-Manager snapshots: import one into a manifest, export a host's as one."""


@snapshot_group.command("import")
@click.argument("snapshot", type=file_path)
@click.option("--manifest", "base_path", type=file_path,
              help="Pin the snapshot onto this manifest: the output extends it (which stays as written).")
@click.option("-o", "--output", type=file_path, help="Write the manifest here (default: print it).")
@user_errors
def import_command(snapshot: Path, base_path: Path | None, output: Path | None) -> None:
    """Turn a ComfyUI-Manager SNAPSHOT (.json or .yaml) into manifest plugins pinned by commit and pip pins.

    What cannot be taken over (disabled nodes, single-file nodes, registry nodes the catalog does not
    know, torch/nunchaku pins the resolver owns) is left out and listed in the manifest's header.
    """
    parsed = load_snapshot(snapshot)
    base = load_manifest(base_path) if base_path else None
    if output is not None and base_path is not None and output.resolve() == base_path.resolve():
        raise ProvisionError(f"{output}: the output would overwrite the manifest it extends; name another file")
    result = import_snapshot(parsed, load_catalog(), base.manifest if base else None)
    out_dir = output.parent if output else Path.cwd()
    text = overlay_manifest(result, snapshot, base, out_dir) if base else standalone_manifest(result, snapshot)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"{output}: written ({len(result.plugins)} plugins, {len(result.packages)} pip pins)")
    for note in result.notes:
        click.echo(f"  note: {note}")


@snapshot_group.command("export")
@click.argument("manifest", type=file_path)
@click.option("-o", "--output", type=file_path,
              help="Write the snapshot here: .json, or .yaml (default: print it as JSON).")
@user_errors
def export_command(manifest: Path, output: Path | None) -> None:
    """Write MANIFEST's host's ComfyUI commit, custom nodes and pip packages as a ComfyUI-Manager snapshot.

    Read-only: one facts call on the host. ComfyUI-Manager restores the file (put it in its snapshots folder).
    """
    loaded = load_manifest(manifest)
    target = output or Path("snapshot.json")
    check_snapshot_path(target)  # before contacting the host
    export = snapshot_of(host_facts(loaded.manifest), loaded.manifest)
    for warning in export.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    text = dump_snapshot(export.snapshot, target)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"{output}: written ({len(export.snapshot.git_nodes)} git custom nodes, "
               f"{len(export.snapshot.pips or {})} pip packages)")
