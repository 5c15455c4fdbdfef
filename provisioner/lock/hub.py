"""The Hugging Face Hub's HTTP API, as much as locking needs: a revision's commit and its files' hashes.

`GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true` answers
`{"sha": COMMIT, "siblings": [{"rfilename", "size", "blobId", "lfs": {"sha256", "size", ...}}]}`
(what huggingface_hub's `model_info(files_metadata=True)` reads). Files kept in git rather than LFS
carry no sha256 there; they are small, so they are hashed by downloading them at the commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from provisioner.lock.errors import LockError
from provisioner.lock.fetch import FetchError, fetch_json, hash_url

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
    """Reads from `endpoint` (the Hub or a mirror with its layout); one API call per repo and revision."""

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
        return hash_url(self.file_url(repo, sha, path), self.token)

    def _fetch_revision(self, repo: str, revision: str) -> HubRevision:
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}?blobs=true"
        try:
            data = fetch_json(url, self.token)
        except FetchError as exc:
            raise LockError(_explain(repo, revision, exc)) from None
        return parse_revision(repo, revision, data, url)


def parse_revision(repo: str, revision: str, data: Any, url: str = "") -> HubRevision:
    """The commit and per-file size/sha256 from a `model_info` answer."""
    sha = data.get("sha") if isinstance(data, dict) else None
    if not isinstance(sha, str) or not _COMMIT.match(sha):
        raise LockError(f"{url or repo}: the Hub's answer has no commit sha for revision {revision!r}")
    files: dict[str, HubFile] = {}
    for sibling in data.get("siblings") or []:
        name = sibling.get("rfilename") if isinstance(sibling, dict) else None
        if not isinstance(name, str):
            continue
        lfs = sibling.get("lfs") if isinstance(sibling.get("lfs"), dict) else {}
        size = lfs.get("size", sibling.get("size"))
        sha256 = lfs.get("sha256")
        files[name] = HubFile(size if isinstance(size, int) else None, sha256 if isinstance(sha256, str) else None)
    return HubRevision(repo, revision, sha, files)


def _explain(repo: str, revision: str, exc: FetchError) -> str:
    where = f"models: {repo} at revision {revision!r}"
    if exc.status in (401, 403):
        return f"{where}: the Hub refused access ({exc}); set HF_TOKEN to a token that can read the repo"
    if exc.status == 404:
        return f"{where}: not found ({exc}); check the repo name and `revision`, or the mirrors file"
    return f"{where}: {exc}; check the network, or map huggingface to a reachable endpoint in the mirrors file"
