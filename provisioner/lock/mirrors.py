"""Mirrors: URL rewrites per source, kept on the controller so manifests and locks name upstreams only.

A `provision.mirrors.yaml` looks like:

    mirrors:
      - {prefix: "https://github.com/", replace: "file:///srv/git/"}
    huggingface:
      endpoint: "http://127.0.0.1:9000"     # HF_ENDPOINT semantics: {endpoint}/{repo}/resolve/{rev}/{file}

The longest matching prefix wins (as with git's `url.<base>.insteadOf`), so a specific entry can
override a broad one whatever their order.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from provisioner.errors import ManifestError
from provisioner.lock.errors import MirrorsError
from provisioner.manifest.loader import validate_model
from provisioner.manifest.source import load_yaml_file
from provisioner.resolve.result import Resolution

MIRRORS_FILE = "provision.mirrors.yaml"
MIRRORS_ENV = "PROVISION_MIRRORS"
HUB_ENDPOINT = "https://huggingface.co"
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
        """Where Hub API calls go."""
        return self.huggingface.endpoint if self.huggingface else HUB_ENDPOINT

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
    """A copy of `resolution` whose every download and clone URL goes through the mirrors."""
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
    for model in out.models:
        if model.url is not None:
            model.url = mirrors.rewrite(model.url)
    return out
