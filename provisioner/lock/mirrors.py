"""Mirrors: URL rewrites per source, kept on the controller so manifests and locks name upstreams only.

A `provision.mirrors.yaml` looks like:

    mirrors:
      - {prefix: "https://github.com/", replace: "file:///srv/git/"}
      - {prefix: "https://pypi.org/simple", replace: "http://127.0.0.1:8000/simple"}
    huggingface:
      endpoint: "http://127.0.0.1:9000"     # HF_ENDPOINT semantics: {endpoint}/{repo}/resolve/{rev}/{file}

The longest matching prefix wins (as with git's `url.<base>.insteadOf`), so a specific entry can
override a broad one whatever their order. Every URL of every expanded resource goes through the
rules once (`mirror_spec`), whichever role or manifest section it came from; a rule covering PyPI's
index also becomes the index of pip installs that name none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from provisioner.errors import ManifestError
from provisioner.lock.errors import MirrorsError
from provisioner.manifest.loader import validate_model
from provisioner.manifest.source import load_yaml_file
from provisioner.resources.specs import (
    DownloadSpec,
    GitSpec,
    PinnedPackage,
    PipSpec,
    RequirementsSpec,
    ResourceBase,
    VenvSpec,
    WheelBuildSpec,
)

if TYPE_CHECKING:
    # Only for annotations: a plain manifest loads the mirrors without the resolver.
    from provisioner.resolve.result import Resolution

MIRRORS_FILE = "provision.mirrors.yaml"
MIRRORS_ENV = "PROVISION_MIRRORS"
HUB_ENDPOINT = "https://huggingface.co"
#: PyPI's index, which pip uses when a resource names none (its `--index-url` default).
PYPI_INDEX = "https://pypi.org/simple"
_SCHEMES = {"http", "https", "file", "ssh", "git"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rewrite(_Strict):
    prefix: str = Field(min_length=1, description="Upstream URL prefix, e.g. https://github.com/.")
    replace: str = Field(description="What replaces the prefix, e.g. file:///srv/git/.")

    @field_validator("prefix", "replace")
    @classmethod
    def _url(cls, value: str) -> str:
        if urlsplit(value).scheme not in _SCHEMES:
            raise ValueError(f"{value!r} must start with a scheme such as https:// or file://")
        return value


class HubMirror(_Strict):
    endpoint: str = Field(description="Serves the Hub's layout: {endpoint}/{repo}/resolve/{revision}/{file}.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError(f"{value!r} must be an http:// or https:// URL, like HF_ENDPOINT")
        return value.rstrip("/")


class Mirrors(_Strict):
    mirrors: list[Rewrite] = Field(default_factory=list)
    huggingface: HubMirror | None = None

    @property
    def hub_endpoint(self) -> str:
        """Where Hub API calls go: `huggingface.endpoint`, else wherever a rule sends the Hub's root."""
        if self.huggingface is not None:
            return self.huggingface.endpoint
        return self.rewrite(HUB_ENDPOINT + "/").rstrip("/")

    @property
    def default_index(self) -> str | None:
        """The mirror of PyPI's index when a rule covers it, for pip installs that name no index."""
        for upstream in (PYPI_INDEX, PYPI_INDEX + "/"):
            mirrored = self.rewrite(upstream)
            if mirrored != upstream:
                return mirrored
        return None

    def token_may_follow(self, upstream: str, mirrored: str) -> bool:
        """Whether a bearer token meant for `upstream` may be sent to `mirrored`.

        Only to the same origin, or from the Hub to the Hub's mirror: a token is never handed to a
        host that was not meant to see it just because a rule moved the URL there.
        """
        if _origin(mirrored) == _origin(upstream):
            return True
        return _origin(upstream) == _origin(HUB_ENDPOINT) and _origin(mirrored) == _origin(self.hub_endpoint)

    def rules(self) -> list[Rewrite]:
        """Every rewrite, the Hub endpoint as one more prefix, longest prefix first."""
        rules = list(self.mirrors)
        if self.huggingface is not None:
            rules.append(Rewrite(prefix=HUB_ENDPOINT + "/", replace=self.huggingface.endpoint + "/"))
        return sorted(rules, key=lambda rule: len(rule.prefix), reverse=True)

    def rewrite(self, url: str) -> str:
        for rule in self.rules():
            if url.startswith(rule.prefix):
                return rule.replace + url[len(rule.prefix):]
        return url


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


NO_MIRRORS = Mirrors()


def find_mirrors_file(manifest_path: Path, explicit: Path | None = None,
                      environ: dict[str, str] | None = None) -> Path | None:
    """--mirrors FILE, else $PROVISION_MIRRORS, else provision.mirrors.yaml next to the manifest."""
    if explicit is not None:
        return explicit
    env = (os.environ if environ is None else environ).get(MIRRORS_ENV)
    if env:
        return Path(env)
    beside = manifest_path.parent / MIRRORS_FILE
    return beside if beside.is_file() else None


def load_mirrors(path: Path | None) -> Mirrors:
    """Read a mirrors file (no file: no rewrites); errors name file:line and the field."""
    if path is None:
        return NO_MIRRORS
    try:
        loaded = load_yaml_file(path)
        return validate_model(Mirrors, loaded.data, loaded.source)
    except ManifestError as exc:
        raise MirrorsError(exc.issues) from None


def rewrite_resolution(resolution: Resolution, mirrors: Mirrors) -> Resolution:
    """A copy of `resolution` whose URLs go through the mirrors, for reports of what the resolver chose.

    The resources the host receives are rewritten by `mirror_spec` after expansion, from the upstream
    resolution, so that no URL goes through the rules twice.
    """
    if not mirrors.rules():
        return resolution
    out = resolution.model_copy(deep=True)
    if out.comfyui is not None:
        out.comfyui.repo = mirrors.rewrite(out.comfyui.repo)
    if out.plugin is not None:
        out.plugin.repo = mirrors.rewrite(out.plugin.repo)
    if out.torch is not None:
        out.torch.index_url = mirrors.rewrite(out.torch.index_url)
    if out.nunchaku is not None:
        out.nunchaku.urls = list(dict.fromkeys(mirrors.rewrite(url) for url in out.nunchaku.urls))
        build = out.nunchaku.build
        if build is not None:
            build.repo = mirrors.rewrite(build.repo)
            for submodule in build.submodules:
                submodule.url = mirrors.rewrite(submodule.url)
    for model in out.models:
        if model.url is not None:
            model.url = mirrors.rewrite(model.url)
    return out


@dataclass(frozen=True)
class MirroredSpec:
    """A resource with its URLs rewritten; `note` says why its token was withheld, when it was."""

    spec: ResourceBase
    note: str | None = None


def mirror_spec(rid: str, spec: ResourceBase, mirrors: Mirrors) -> MirroredSpec:
    """`spec` (any resource kind) with every URL it fetches sent through the mirrors; the input is not modified."""
    if not mirrors.rules():
        return MirroredSpec(spec)
    if isinstance(spec, GitSpec):
        return MirroredSpec(spec.model_copy(update={"repo": mirrors.rewrite(spec.repo)}))
    if isinstance(spec, DownloadSpec):
        return _mirror_download(rid, spec, mirrors)
    if isinstance(spec, WheelBuildSpec):
        return MirroredSpec(_mirror_wheel_build(spec, mirrors))
    if isinstance(spec, VenvSpec):  # the index uv is installed from, as a pip step's
        index = mirrors.rewrite(spec.index_url) if spec.index_url else mirrors.default_index
        return MirroredSpec(spec.model_copy(update={"index_url": index}))
    if isinstance(spec, PipSpec | RequirementsSpec):
        update: dict[str, Any] = _mirror_indexes(spec, mirrors)
        if isinstance(spec, PipSpec):
            update["packages"] = [_mirror_package(package, mirrors) for package in spec.packages]
        return MirroredSpec(spec.model_copy(update=update))
    return MirroredSpec(spec)


def _mirror_wheel_build(spec: WheelBuildSpec, mirrors: Mirrors) -> WheelBuildSpec:
    """A source build fetches its repository and each submodule: every one of them goes through the rules."""
    submodules = [module.model_copy(update={"url": mirrors.rewrite(module.url)}) for module in spec.submodules]
    return spec.model_copy(update={"repo": mirrors.rewrite(spec.repo), "submodules": submodules})


def _mirror_download(rid: str, spec: DownloadSpec, mirrors: Mirrors) -> MirroredSpec:
    url = mirrors.rewrite(spec.url)
    if spec.auth is None or mirrors.token_may_follow(spec.url, url):
        return MirroredSpec(spec.model_copy(update={"url": url}))
    host = urlsplit(url).netloc or url.split("://", 1)[0] + "://"
    fix = ("map the Hub with `huggingface.endpoint` in the mirrors file if that mirror should receive it"
           if _origin(spec.url) == _origin(HUB_ENDPOINT) else "a token goes only to the host its URL names")
    note = (f"{rid}: the mirror {host} replaces {urlsplit(spec.url).netloc}, which ${spec.auth.from_env} is meant "
            f"for, so the token is not sent there; {fix}")
    return MirroredSpec(spec.model_copy(update={"url": url, "auth": None}), note)


def _mirror_indexes(spec: PipSpec | RequirementsSpec, mirrors: Mirrors) -> dict[str, Any]:
    index = mirrors.rewrite(spec.index_url) if spec.index_url else mirrors.default_index
    return {
        "index_url": index,
        "extra_index_urls": [mirrors.rewrite(url) for url in spec.extra_index_urls],
        # Entries without a scheme are folders under the target root, not URLs.
        "find_links": [mirrors.rewrite(link) if "://" in link else link for link in spec.find_links],
    }


def _mirror_package(package: str | PinnedPackage, mirrors: Mirrors) -> str | PinnedPackage:
    if isinstance(package, PinnedPackage) and package.url:
        return package.model_copy(update={"url": mirrors.rewrite(package.url)})
    return package
