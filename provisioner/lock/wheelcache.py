"""A controller-side cache of downloaded wheels, keyed by URL, so re-locking does not download again."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from posixpath import basename
from urllib.parse import unquote, urlsplit

from provisioner.lock.fetch import download

CACHE_ENV = "PROVISION_CACHE_DIR"


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """$PROVISION_CACHE_DIR, else $XDG_CACHE_HOME/provision, else ~/.cache/provision."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "provision"


@dataclass(frozen=True)
class CachedFile:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class WheelCache:
    root: Path

    def fetch(self, url: str) -> CachedFile:
        """The file `url` serves, downloaded once; later calls trust the recorded hash while the size holds."""
        entry = self.root / "wheels" / hashlib.sha256(url.encode()).hexdigest()[:32]
        meta = entry / "meta.json"
        target = entry / (basename(unquote(urlsplit(url).path)) or "download")
        cached = self._read(meta, target, url)
        if cached is not None:
            return cached
        sha256, size = download(url, target)
        meta.write_text(json.dumps({"url": url, "sha256": sha256, "size": size}, indent=2, sort_keys=True) + "\n")
        return CachedFile(target, sha256, size)

    @staticmethod
    def _read(meta: Path, target: Path, url: str) -> CachedFile | None:
        try:
            recorded = json.loads(meta.read_text())
            if recorded["url"] == url and target.stat().st_size == recorded["size"]:
                return CachedFile(target, str(recorded["sha256"]), int(recorded["size"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None
