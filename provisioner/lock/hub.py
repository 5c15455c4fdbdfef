"""The Hugging Face Hub, as much as locking needs, through huggingface_hub: a revision's commit and its
files' hashes.

`HfApi(endpoint=...).model_info(repo, revision=..., files_metadata=True)` is one API call per repo and
revision; it gives the commit and, for LFS files, their sha256 and size. Files kept in git rather than
LFS carry no sha256 there; they are small, so they are fetched with `hf_hub_download` at the commit and
hashed. The endpoint is the mirrors file's `huggingface.endpoint` (what HF_ENDPOINT would be).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import ModelInfo

from provisioner.agent.fsutil import sha256_file
from provisioner.lock.errors import LockError

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubFile:
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class HubRevision:
    repo: str
    revision: str
    sha: str
    files: dict[str, HubFile]


@dataclass
class HubClient:
    """Reads from `endpoint` (the Hub or a mirror with its layout); one API call per repo and revision.

    With no `token`, huggingface_hub uses HF_TOKEN or the controller's token file, as `hf` does.
    """

    endpoint: str
    token: str | None = None
    _revisions: dict[tuple[str, str], HubRevision] = field(default_factory=dict)

    def revision(self, repo: str, revision: str) -> HubRevision:
        key = (repo, revision)
        if key not in self._revisions:
            self._revisions[key] = self._fetch_revision(repo, revision)
        return self._revisions[key]

    def file_url(self, repo: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def file_hash(self, repo: str, sha: str, path: str) -> tuple[str, int]:
        """sha256 and size of a file kept in git (no LFS metadata), read at commit `sha`."""
        with tempfile.TemporaryDirectory(prefix="provision-hub-") as folder:
            try:
                local = hf_hub_download(repo, path, revision=sha, local_dir=folder, endpoint=self.endpoint,
                                        token=self.token)
            except Exception as exc:  # huggingface_hub's network errors share no base class
                raise LockError(f"{self.file_url(repo, sha, path)}: {_explain(repo, sha, exc)}") from None
            return sha256_file(local), Path(local).stat().st_size

    def _fetch_revision(self, repo: str, revision: str) -> HubRevision:
        api = HfApi(endpoint=self.endpoint, token=self.token, library_name="provision")
        try:
            info = api.model_info(repo, revision=revision, files_metadata=True)
        except Exception as exc:  # huggingface_hub's network errors share no base class
            raise LockError(_explain(repo, revision, exc)) from None
        return revision_from_info(repo, revision, info, self.endpoint)


def revision_from_info(repo: str, revision: str, info: ModelInfo, endpoint: str = "") -> HubRevision:
    """The commit and per-file size/sha256 from a `model_info(files_metadata=True)` answer."""
    sha = info.sha
    if not isinstance(sha, str) or not _COMMIT.match(sha):
        raise LockError(f"{endpoint or repo}: the Hub's answer for {repo} has no commit sha for revision {revision!r}")
    files: dict[str, HubFile] = {}
    for sibling in info.siblings or []:
        lfs: Any = sibling.lfs
        size = lfs.size if lfs is not None else sibling.size
        sha256 = lfs.sha256 if lfs is not None else None
        files[sibling.rfilename] = HubFile(size if isinstance(size, int) else None,
                                           sha256 if isinstance(sha256, str) else None)
    return HubRevision(repo, revision, sha, files)


def _explain(repo: str, revision: str, exc: Exception) -> str:
    where = f"models: {repo} at revision {revision!r}"
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, GatedRepoError):
        return (f"{where}: the repo is gated ({first_line}); accept its terms on the Hub and set HF_TOKEN to a "
                "token of that account")
    status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
    if isinstance(exc, RepositoryNotFoundError) or status in (401, 403):
        return (f"{where}: the Hub refused access ({status} {first_line}); set HF_TOKEN to a token that can read "
                "the repo, or check the repo name")
    if isinstance(exc, RevisionNotFoundError | EntryNotFoundError) or status == 404:
        return f"{where}: not found ({first_line}); check the repo name and `revision`, or the mirrors file"
    return (f"{where}: {type(exc).__name__}: {first_line}; check the network, or map huggingface to a reachable "
            "endpoint in the mirrors file")
