"""Serve a host's missing downloads from the controller's cache instead of the internet.

One probe finds the downloads the host lacks; each is brought into the cache (fetched once for the
whole fleet), pushed to `<root>/.provision/incoming/` on the host, and named in the apply request as
the resource's `staged` file. The agent verifies a staged file before it moves it into place, and
fetches the URL itself when the file is missing or wrong, so a host with internet still converges.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from typing import Any

from provisioner.agent.fsutil import human_size
from provisioner.agent_client import AgentClient, EventCallback
from provisioner.download_cache import CachedFile, DownloadCache, display_url
from provisioner.expand import Expansion
from provisioner.transport.base import Transport

#: Where staged files wait on the host, relative to the target root (the agent accepts no other place).
INCOMING = ".provision/incoming"
STAGED_MODE = 0o644


@dataclass(frozen=True)
class PushedFile:
    id: str
    remote: str
    size: int
    #: Downloaded into the cache by this host's run (False: another host or an earlier run did).
    fetched: bool

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "remote": self.remote, "size": self.size, "fetched": self.fetched}


def staged_name(path: str) -> str:
    """A file name per resource path: two resources with the same content still get a file each."""
    return f"{hashlib.sha256(path.encode('utf-8')).hexdigest()[:16]}-{posixpath.basename(path)}"


def stage_downloads(client: AgentClient, transport: Transport, request: dict[str, Any], expansion: Expansion,
                    cache: DownloadCache, on_event: EventCallback | None = None,
                    ) -> tuple[dict[str, Any], list[PushedFile]]:
    """The apply request with `staged` set on every download the host lacks, and what was pushed for it."""
    downloads = {r.id: r.spec for r in expansion.resources if r.kind == "download"}
    if not downloads:
        return request, []
    probed = client.call("probe", request)
    # Errors (a path outside the root...) are left for the apply to report; ok ones need nothing.
    wanted = [r["id"] for r in probed["resources"] if r["id"] in downloads and r["status"] not in ("ok", "error")]
    pushed: list[PushedFile] = []
    for rid in wanted:
        spec = downloads[rid]
        cached = _cached(cache, rid, spec, on_event)
        remote = posixpath.join(probed["root"], INCOMING, staged_name(spec["path"]))
        transport.put(cached.path, remote, STAGED_MODE)
        pushed.append(PushedFile(rid, remote, cached.size, cached.fetched))
        _notify(on_event, rid, "pushed", f"{rid}: pushed from the controller cache ({human_size(cached.size)})")
    if not pushed:
        return request, []
    staged = {p.id: p.remote for p in pushed}
    # Copies, never the expansion's own specs: `staged` belongs to this one request (and is not in the digest).
    resources = [dict(r, spec=dict(r["spec"], staged=staged[r["id"]])) if r["id"] in staged else r
                 for r in request["resources"]]
    return dict(request, resources=resources), pushed


def _cached(cache: DownloadCache, rid: str, spec: dict[str, Any], on_event: EventCallback | None) -> CachedFile:
    def on_fetch(reason: str) -> None:
        _notify(on_event, rid, "caching", f"{rid}: fetching {display_url(spec['url'])} into the controller "
                f"cache ({reason})")

    return cache.get(spec["url"], sha256=spec.get("sha256"), size=spec.get("size"), token=spec.get("token"),
                     label=rid, on_fetch=on_fetch, hub=spec.get("hub"))


def _notify(on_event: EventCallback | None, rid: str, phase: str, message: str) -> None:
    if on_event is not None:
        on_event({"event": "progress", "id": rid, "phase": phase, "message": message})
