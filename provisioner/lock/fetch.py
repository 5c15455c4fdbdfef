"""Downloads for locking (wheels whose sha256 the lockfile pins), through the agent's transfer loop."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from provisioner import __version__
from provisioner.agent import transfer
from provisioner.lock.errors import LockError


class FetchError(LockError):
    """A URL could not be read; `status` is the HTTP status when there was one."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(f"{url}: {reason}")


def download(url: str, dest: Path, token: str | None = None) -> tuple[str, int]:
    """Save `url` to `dest` (resumable `.part`, then a rename) and return its sha256 and size."""
    if url.startswith("-"):
        raise FetchError(url, "not a URL")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.part")
    try:
        digest = transfer.fetch(url, str(partial), token, f"provision/{__version__}")
    except transfer.TransferError as exc:
        raise FetchError(transfer.display_url(url), str(exc), exc.status) from None
    except ValueError as exc:  # urllib's "unknown url type"
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise FetchError(url, str(exc)) from None
    os.replace(partial, dest)
    return digest, dest.stat().st_size
