"""`provision lock MANIFEST`: pin what the manifest resolves to (commits, sha256s, revisions) in MANIFEST.lock."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from provisioner import redaction
from provisioner.catalog import load_catalog
from provisioner.errors import ProvisionError
from provisioner.facts import load_facts
from provisioner.lock.create import LockSources, create_lock
from provisioner.lock.errors import LockError
from provisioner.lock.mirrors import find_mirrors_file, load_mirrors
from provisioner.lock.model import Lock, dump_lock, lock_path_for, read_lock, write_lock
from provisioner.lock.overlay import lock_disagreements
from provisioner.lock.wheelcache import WheelCache, default_cache_dir
from provisioner.manifest import load_manifest
from provisioner.preflight import live_facts
from provisioner.resolve import Resolution, resolve
from provisioner.stack import needs_resolution

EXIT_OK, EXIT_ERROR, EXIT_STALE = 0, 1, 2


@click.command("lock")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--facts", "facts_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Host facts saved as JSON; resolve for that host without contacting it.")
@click.option("--mirrors", "mirrors_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Mirrors file (default: $PROVISION_MIRRORS, else provision.mirrors.yaml next to MANIFEST).")
@click.option("--update", is_flag=True, help="Re-resolve and re-pin everything: branches move, revisions advance.")
@click.option("--no-download", is_flag=True,
              help="Do not download the nunchaku wheel; its sha256 stays unpinned (with a warning).")
@click.option("--check", is_flag=True, help="Write nothing; exit 0 if the lock fits the manifest, 2 if not.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where downloaded wheels are kept (default: $PROVISION_CACHE_DIR or ~/.cache/provision).")
def lock_command(manifest: Path, facts_path: Path | None, mirrors_path: Path | None, update: bool,
                 no_download: bool, check: bool, cache_dir: Path | None) -> None:
    """Pin MANIFEST's resolution in MANIFEST.lock: git commits, the wheel's sha256, torch, Hub revisions.

    Pins that still fit the manifest are kept; --update re-pins everything. plan and apply use the lock.
    """
    try:
        code = _lock(manifest, facts_path, mirrors_path, update, no_download, check, cache_dir)
    except ProvisionError as exc:
        click.secho(redaction.redact(f"error: {exc}"), fg="red", err=True)
        code = EXIT_ERROR
    sys.exit(code)


def _lock(manifest_path: Path, facts_path: Path | None, mirrors_path: Path | None, update: bool,
          no_download: bool, check: bool, cache_dir: Path | None) -> int:
    loaded = load_manifest(manifest_path)
    if not needs_resolution(loaded.manifest):
        raise LockError(f"{manifest_path}: nothing to lock: the manifest has no comfyui or models section, "
                        "so nothing is resolved; its resources already name exact versions")
    mirrors = load_mirrors(find_mirrors_file(manifest_path, mirrors_path))
    facts = load_facts(facts_path) if facts_path else live_facts(loaded.manifest)
    resolution = resolve(loaded.manifest, facts, load_catalog())
    path = lock_path_for(manifest_path)
    previous = _previous(path, update)
    if check:
        return _check(path, previous, resolution)
    stale = lock_disagreements(resolution, previous, with_fix=False) if previous and resolution.ok else []
    wheels = None if no_download else WheelCache(cache_dir or default_cache_dir())
    sources = LockSources(mirrors, wheels, hub_token=os.environ.get("HF_TOKEN") or None, previous=previous)
    lock = create_lock(loaded.manifest, resolution, facts, sources)
    for warning in sources.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    unchanged = path.is_file() and path.read_text(encoding="utf-8") == dump_lock(lock)
    if not unchanged:
        write_lock(lock, path)
    click.echo(f"{path}: {'unchanged' if unchanged else 'written'}")
    for line in stale:
        click.echo(f"  re-pinned: {line}")
    click.echo(_summary(lock))
    return EXIT_OK


def _previous(path: Path, update: bool) -> Lock | None:
    if update or not path.is_file():
        return None
    return read_lock(path)


def _check(path: Path, previous: Lock | None, resolution: Resolution) -> int:
    if previous is None:
        click.echo(f"{path}: missing; run `provision lock`")
        return EXIT_STALE
    if not resolution.ok:
        raise LockError("the manifest does not resolve on this host; run `provision resolve` to see why")
    stale = lock_disagreements(resolution, previous)
    for line in stale:
        click.echo(f"  {line}")
    click.echo(f"{path}: {'stale' if stale else 'up to date'}")
    return EXIT_STALE if stale else EXIT_OK


def _summary(lock: Lock) -> str:
    rows: list[tuple[str, str]] = []
    if lock.torch is not None:
        rows.append(("torch", f"{lock.torch.version} from {lock.torch.index_url}"))
    if lock.nunchaku is not None:
        sha = lock.nunchaku.sha256[:16] + "…" if lock.nunchaku.sha256 else "not pinned"
        rows.append(("nunchaku", f"{lock.nunchaku.filename} sha256 {sha}"))
    if lock.comfyui is not None:
        rows.append(("ComfyUI", f"{lock.comfyui.ref} → {lock.comfyui.commit[:12]}"))
    rows += [(plugin.name, f"{plugin.ref} → {plugin.commit[:12]}") for plugin in lock.plugins]
    for model in lock.models:
        at = f" @ {model.revision} → {model.commit[:12]}" if model.commit else ""
        sha = model.sha256[:16] + "…" if model.sha256 else "not pinned"
        rows.append((model.filename, f"{model.repo or model.url}{at} sha256 {sha}"))
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)
