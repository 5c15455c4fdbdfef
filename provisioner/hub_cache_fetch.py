"""A Hub file brought into the controller's download cache the way Hugging Face users expect: from the
controller's own Hugging Face cache when it holds the pinned sha256 (a hard link, else a copy), else with
huggingface_hub's `hf_hub_download` (its Xet backend, HF_TOKEN or the token file, the endpoint the URL
points to). None means "use the plain HTTP loop": the URL is not a Hub file URL, or huggingface_hub
could not get past something the Hub did not say about the file itself.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from provisioner.agent import hfcache
from provisioner.agent.fsutil import sha256_file
from provisioner.errors import ProvisionError


@dataclass(frozen=True)
class HubSource:
    repo: str
    revision: str
    file: str
    endpoint: str

    def as_agent_hub(self) -> dict[str, str]:
        return {"repo": self.repo, "revision": self.revision, "file": self.file}


def hub_source(url: str, hub: dict[str, str] | None) -> HubSource | None:
    """Where `url` is on the Hub, when it is `hub`'s file URL under some endpoint (the Hub or its mirror)."""
    if not hub:
        return None
    from provisioner.agent import hubfetch

    endpoint = hubfetch.endpoint_of({"url": url, "hub": hub})
    if endpoint is None:
        return None
    return HubSource(hub["repo"], hub["revision"], hub["file"], endpoint)


def from_hf_cache(source: HubSource, sha256: str | None, size: int | None, target: Path) -> bool:
    """Put the controller's Hugging Face cache copy at `target` when it has the pinned sha256."""
    if not sha256:
        return False
    cached = hfcache.find(source.as_agent_hub(), sha256, size)
    if cached is None:
        return False
    try:
        hfcache.place(cached, str(target))
    except Exception:  # the agent's ResourceFailure: the plain download is still there to try
        return False
    return True


def download_with_hf(source: HubSource, token: str | None, target: Path, label: str,
                     error: type[ProvisionError]) -> str | None:
    """hf_hub_download into a folder beside `target`, then renamed to it; its sha256, or None to fall back."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()  # the controller reports progress in its own lines
    staging = target.with_name(target.name + ".hub")
    try:
        local = hf_hub_download(source.repo, source.file, revision=source.revision, local_dir=staging,
                                endpoint=source.endpoint, token=token)
    except (GatedRepoError, RepositoryNotFoundError) as exc:
        raise error(f"{label}: the Hub refused {source.repo} to the controller's download cache "
                    f"({type(exc).__name__}); set the HF_TOKEN secret to a token that can read the repo, and accept "
                    "its terms if it is gated"
                    ) from None
    except (EntryNotFoundError, RevisionNotFoundError) as exc:
        raise error(f"{label}: {source.repo} has no {source.file} at revision {source.revision} "
                    f"({type(exc).__name__}); check the model's repo, file and revision") from None
    except Exception:  # network trouble or a server without the Hub's headers: the plain loop tries next
        return None
    path = Path(local)
    if path.is_symlink() or not path.is_file():
        return None
    digest = sha256_file(str(path))
    path.replace(target)
    shutil.rmtree(staging, ignore_errors=True)
    return digest
