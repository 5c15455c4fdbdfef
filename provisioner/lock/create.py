"""Make a lock from a resolution: ask each upstream (through the mirrors) what the chosen names point to.

Git refs go through `git ls-remote`, the nunchaku wheel is downloaded once into the controller's
cache and hashed, Hugging Face revisions and file hashes come from the Hub's API. The lock records
upstream URLs; the mirrors only decide where the questions are sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from provisioner.facts import Facts
from provisioner.lock.errors import LockError
from provisioner.lock.fetch import FetchError
from provisioner.lock.gitrefs import remote_commit
from provisioner.lock.hub import HubClient
from provisioner.lock.mirrors import HUB_ENDPOINT, Mirrors
from provisioner.lock.model import (
    Lock,
    LockedFacts,
    LockedGit,
    LockedManifest,
    LockedModel,
    LockedPlugin,
    LockedTorch,
    LockedWheel,
    manifest_digest,
)
from provisioner.lock.wheelcache import WheelCache
from provisioner.manifest.model import Manifest
from provisioner.resolve import render_resolution
from provisioner.resolve.result import ComfyUIChoice, ModelChoice, NunchakuChoice, PluginChoice, Resolution


@dataclass
class LockSources:
    """Where locking asks its questions. `wheels` None means --no-download: wheel hashes stay unknown."""

    mirrors: Mirrors
    wheels: WheelCache | None
    hub_token: str | None = None
    previous: Lock | None = None
    warnings: list[str] = field(default_factory=list)
    hub: HubClient = field(init=False)

    def __post_init__(self) -> None:
        self.hub = HubClient(self.mirrors.hub_endpoint, self.hub_token)


def create_lock(manifest: Manifest, resolution: Resolution, facts: Facts, sources: LockSources) -> Lock:
    """Pin every identity `resolution` chose; pins in `sources.previous` that still fit are kept as they are."""
    if not resolution.ok:
        raise LockError("the manifest does not resolve on this host, so there is nothing to lock:\n"
                        + render_resolution(resolution, manifest.name))
    return Lock(
        manifest=LockedManifest(name=manifest.name, digest=manifest_digest(manifest)),
        facts=LockedFacts(
            gpu_arch=resolution.gpu.arch if resolution.gpu else None,
            python=resolution.python,
            platform=resolution.platform,
            driver_cuda=facts.nvidia.cuda,
        ),
        mode=resolution.mode,
        torch=_torch(resolution),
        nunchaku=_wheel(resolution.nunchaku, sources) if resolution.nunchaku else None,
        comfyui=_comfyui(resolution.comfyui, sources) if resolution.comfyui else None,
        plugins=[_plugin(resolution.plugin, sources)] if resolution.plugin else [],
        models=[_model(model, index, sources) for index, model in enumerate(resolution.models)],
    )


def _torch(resolution: Resolution) -> LockedTorch | None:
    torch = resolution.torch
    if torch is None:
        return None
    return LockedTorch(version=torch.version, cuda=torch.cuda, index_url=torch.index_url,
                       requirements=list(torch.requirements))


def _comfyui(choice: ComfyUIChoice, sources: LockSources) -> LockedGit:
    previous = sources.previous.comfyui if sources.previous else None
    if previous is not None and (previous.repo, previous.ref) == (choice.repo, choice.ref):
        return previous
    commit = remote_commit(sources.mirrors.rewrite(choice.repo), choice.ref, "comfyui.ref")
    return LockedGit(repo=choice.repo, ref=choice.ref, commit=commit)


def _plugin(choice: PluginChoice, sources: LockSources) -> LockedPlugin:
    plugins = sources.previous.plugins if sources.previous else []
    previous = next((p for p in plugins if p.name == choice.name), None)
    if previous is not None and (previous.repo, previous.ref) == (choice.repo, choice.ref):
        return previous
    field_name = f"comfyui.plugins[{choice.name}].ref"
    commit = remote_commit(sources.mirrors.rewrite(choice.repo), choice.ref, field_name)
    return LockedPlugin(name=choice.name, repo=choice.repo, ref=choice.ref, commit=commit)


def _wheel(choice: NunchakuChoice, sources: LockSources) -> LockedWheel:
    previous = sources.previous.nunchaku if sources.previous else None
    if choice.build is not None:
        # Built on the host: nothing to download and hash here; the build key and source commit pin it.
        return LockedWheel(version=choice.version, filename=choice.filename, url=choice.build.repo, sha256=None,
                           size=None)
    if previous is not None and previous.sha256 and _same_wheel(previous, choice):
        return previous
    if sources.wheels is None:
        if not choice.sha256:
            sources.warnings.append(f"the nunchaku wheel {choice.filename} was not downloaded (--no-download), so "
                                    "its sha256 is not pinned; run `provision lock` without --no-download to pin it")
        return LockedWheel(version=choice.version, filename=choice.filename, url=choice.urls[0],
                           sha256=choice.sha256, size=None)
    failures = []
    # The first URL that answers is pinned; the sha256 makes any mirror of it equally good later.
    for url in choice.urls:
        try:
            cached = sources.wheels.fetch(sources.mirrors.rewrite(url))
        except FetchError as exc:
            failures.append(f"  {exc}")
            continue
        if choice.sha256 and cached.sha256 != choice.sha256:
            raise LockError(f"nunchaku.wheel_sha256 is {choice.sha256}, but {url} serves a file with sha256 "
                            f"{cached.sha256}; correct wheel_sha256 or wheel_url")
        return LockedWheel(version=choice.version, filename=choice.filename, url=url, sha256=cached.sha256,
                           size=cached.size)
    raise LockError("\n".join([f"cannot download the nunchaku wheel {choice.filename}:", *failures,
                               "  add a mirror for its URL in the mirrors file, or lock with --no-download"]))


def _same_wheel(locked: LockedWheel, choice: NunchakuChoice) -> bool:
    return locked.filename == choice.filename and locked.url in choice.urls


def _model(choice: ModelChoice, index: int, sources: LockSources) -> LockedModel:
    previous = next((m for m in sources.previous.models if m.key == (choice.repo, choice.file, choice.folder)),
                    None) if sources.previous else None
    if previous is not None and previous.revision == choice.revision and previous.sha256 and (
        previous.commit is not None or previous.url == choice.url
    ):
        return previous
    hub_prefix = f"{HUB_ENDPOINT}/{choice.repo}/resolve/{choice.revision}/"
    if choice.repo and choice.url and choice.url.startswith(hub_prefix):
        return _hub_model(choice, index, hub_prefix, sources)
    if not choice.sha256:
        sources.warnings.append(f"models[{index}]: {choice.url} is not on the Hub, so its sha256 is not pinned; "
                                "add `sha256:` to the model in the manifest")
    return LockedModel(repo=choice.repo, file=choice.file, filename=choice.filename, folder=choice.folder,
                       revision=choice.revision, commit=None, url=choice.url, sha256=choice.sha256,
                       size=None if choice.size_approx else choice.size)


def _hub_model(choice: ModelChoice, index: int, hub_prefix: str, sources: LockSources) -> LockedModel:
    assert choice.repo is not None and choice.url is not None
    revision = sources.hub.revision(choice.repo, choice.revision)
    found = revision.files.get(choice.file)
    if found is None and choice.companion_of:
        raise LockError(f"the {choice.companion_of} workflow set: {choice.repo} has no file {choice.file!r} at "
                        f"revision {choice.revision!r} (commit {revision.sha[:12]}); set companions: false on the "
                        "model and list the files its workflow needs yourself")
    if found is None:
        raise LockError(f"models[{index}]: {choice.repo} has no file {choice.file!r} at revision "
                        f"{choice.revision!r} (commit {revision.sha[:12]}); check the model's file and revision")
    sha256, size = found.sha256, found.size
    if sha256 is None:
        # Kept in git rather than LFS, so the API gives no sha256; such files are small.
        sha256, size = sources.hub.file_hash(choice.repo, revision.sha, choice.file)
    if choice.sha256 and choice.sha256 != sha256 and choice.companion_of:
        raise LockError(f"the catalog's sha256 for {choice.repo}/{choice.file} (of the {choice.companion_of} "
                        f"workflow set) is {choice.sha256}, but the Hub serves sha256 {sha256} at commit "
                        f"{revision.sha[:12]}; list the file under models with the Hub's sha256, or set "
                        f"companions: false on the model and list its files yourself")
    if choice.sha256 and choice.sha256 != sha256:
        raise LockError(f"models[{index}].sha256 is {choice.sha256}, but the Hub serves {choice.repo}/{choice.file} "
                        f"with sha256 {sha256} at commit {revision.sha[:12]}; correct or drop the manifest's sha256")
    url = f"{HUB_ENDPOINT}/{choice.repo}/resolve/{revision.sha}/" + choice.url[len(hub_prefix):]
    return LockedModel(repo=choice.repo, file=choice.file, filename=choice.filename, folder=choice.folder,
                       revision=choice.revision, commit=revision.sha, url=url, sha256=sha256, size=size)
