"""Manifest loading and validation."""

from provisioner.manifest.loader import LoadedManifest, load_manifest
from provisioner.manifest.model import Manifest

__all__ = ["LoadedManifest", "Manifest", "load_manifest"]
