"""Every URL a host or the controller fetches goes through the mirrors file: the shipped GPU manifests in
every mode name no upstream host in their plan, and a real clone and a real pip install reach the mirror."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from provisioner import preflight
from provisioner.engine import HostSession, RunOptions
from provisioner.facts import load_facts
from provisioner.lock.fetch import download
from provisioner.manifest import load_manifest
from tests.support.fake_hub import HubState, serve_hub
from tests.support.gitrepos import git, make_upstream
from tests.support.runs import changed
from tests.support.servers import serve_directory, serve_handler
from tests.support.wheels import build_wheel, write_simple_index

REPO = Path(__file__).resolve().parents[2]
FACTS = REPO / "tests" / "unit" / "facts"
UPSTREAM_HOSTS = ("github.com", "huggingface.co", "pytorch.org", "pypi.org")
GIT_MIRROR = "file:///srv/mirror/github/"
FILES_MIRROR = "http://127.0.0.1:9/"
HUB_MIRROR = "http://127.0.0.1:10"
TOKEN = "hf_only-for-the-hub"
# The whole of every upstream the shipped manifests name, each on a mirror of its own.
RULES = [
    {"prefix": "https://github.com/", "replace": GIT_MIRROR},
    {"prefix": "https://github.com/nunchaku-ai/nunchaku/releases/download/", "replace": FILES_MIRROR + "wheels/"},
    {"prefix": "https://download.pytorch.org/", "replace": FILES_MIRROR + "pytorch/"},
    {"prefix": "https://pypi.org/simple", "replace": FILES_MIRROR + "pypi/simple"},
]
MIRRORS = {"mirrors": RULES, "huggingface": {"endpoint": HUB_MIRROR}}
# Plugin settings and `checks.nodes` the recorded hosts cannot use are left out: the point is the URLs.
CPU = {"gpu": {"arch": "auto", "allow_cpu": True}, "checks": {"nodes": []}}
FALLBACK = {"gpu": {"arch": "auto"}, "nunchaku": {"precision": "auto"}, "cuda": {"version": "auto"},
            "checks": {"nodes": []}}
GPU_MANIFESTS = ["rtx3090", "rtx4090", "rtx5090", "a100", "t4", "docker"]
CASES = [
    *[(name, "rtx4090" if name == "docker" else name, "nunchaku", {}) for name in GPU_MANIFESTS],
    *[(name, "nogpu", "cpu", CPU) for name in GPU_MANIFESTS],
    *[(name, "h100", "plain", FALLBACK) for name in GPU_MANIFESTS],
]


def _overlay(tmp_path: Path, base: Path, sections: dict[str, object]) -> Path:
    """The shipped manifest, planned on this machine under a root of the test's own."""
    data = {"extends": str(base), **sections,
            "target": {"connection": "local", "root": str(tmp_path / "root")}}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _mirrors_file(tmp_path: Path, mirrors: Mapping[str, object]) -> Path:
    path = tmp_path / "mirrors.yaml"
    path.write_text(yaml.safe_dump(mirrors, sort_keys=False))
    return path


def _upstream_hosts(text: str) -> list[str]:
    return sorted({host for host in UPSTREAM_HOSTS if host in text})


@pytest.mark.parametrize(("manifest", "facts", "mode", "sections"), CASES,
                         ids=[f"{m}-{mode}" for m, _, mode, _ in CASES])
def test_the_plan_of_a_mirrored_gpu_manifest_names_no_upstream_host(
        manifest: str, facts: str, mode: str, sections: dict[str, object], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = load_facts(FACTS / f"{facts}.json")
    monkeypatch.setattr(preflight, "gather_facts", lambda client, manifest: recorded)
    mirrors = _mirrors_file(tmp_path, MIRRORS)
    monkeypatch.setenv("PROVISION_MIRRORS", str(mirrors))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    session = HostSession(load_manifest(_overlay(tmp_path, REPO / "manifests" / f"{manifest}.yaml", sections)))
    report = session.plan()
    assert session.resolution is not None
    assert session.resolution.mode == mode and session.resolution.torch is not None
    assert session.resolution.torch.index_url.startswith(FILES_MIRROR + "pytorch/whl/")
    # What plan prints, what the host is sent, and what the resolver reports: every URL there is.
    rendered = json.dumps({"plan": report.as_json(), "request": session.expansion.payload(),
                           "resolution": session.resolution.model_dump(mode="json")})
    assert _upstream_hosts(rendered) == [], re.findall(r"https?://[^\s\"']+", rendered)

    specs = {r.id: r.spec for r in session.expansion.resources}
    clones = {s["path"]: s["repo"] for s in specs.values() if s["kind"] == "git"}
    assert clones["ComfyUI"] == GIT_MIRROR + "Comfy-Org/ComfyUI", "the shipped base names Comfy-Org"
    if mode == "nunchaku":
        assert clones["ComfyUI/custom_nodes/ComfyUI-nunchaku"].startswith(GIT_MIRROR)
    assert all(repo.startswith(GIT_MIRROR) for repo in clones.values()), clones
    installs = [s for s in specs.values() if s["kind"] in ("pip", "requirements")]
    assert installs and all(s["index_url"].startswith(FILES_MIRROR) for s in installs), installs
    assert specs["pip:venv#torch"]["index_url"].startswith(FILES_MIRROR + "pytorch/whl/")
    downloads = [s for s in specs.values() if s["kind"] == "download"]
    models = [s for s in downloads if "/models/" in s["path"]]
    assert models and all(s["url"].startswith(HUB_MIRROR + "/") and s["token"] == TOKEN for s in models)
    wheels = [s for s in downloads if s["path"].startswith("cache/wheels/")]
    assert len(wheels) == (1 if mode == "nunchaku" else 0)
    assert all(s["url"].startswith(FILES_MIRROR + "wheels/") and "token" not in s for s in wheels)
    assert f"URLs rewritten by the mirrors in {mirrors}" in report.notes


def test_a_manifest_without_the_stack_is_mirrored_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "plain.yaml"
    manifest.write_text(yaml.safe_dump({
        "extends": str(REPO / "manifests" / "local.yaml"),
        "target": {"connection": "local", "root": str(tmp_path / "root")},
        "resources": [
            {"kind": "git", "path": "tools/x", "repo": "https://github.com/example/x", "ref": "v1.0"},
            {"kind": "download", "path": "models/vae/ae.safetensors",
             "url": "https://huggingface.co/org/repo/resolve/main/ae.safetensors",
             "auth": {"from_env": "HF_TOKEN"}},
            {"kind": "download", "path": "models/loras/l.safetensors",
             "url": "https://huggingface.co/other/loras/resolve/main/l.safetensors",
             "auth": {"from_env": "HF_TOKEN"}},
            {"kind": "pip", "name": "extra", "venv": "venv", "packages": [
                {"requirement": "tool==1.0", "url": "https://github.com/example/tool/releases/download/1.0/t.whl"}],
             "extra_index_urls": ["https://download.pytorch.org/whl/cpu"],
             "find_links": ["cache/wheels", "https://github.com/example/wheels/releases"]},
        ],
    }, sort_keys=False))
    # A rule that moves one Hub repo to some other host must not take the Hub's token along.
    rules = [*RULES, {"prefix": "https://huggingface.co/other/", "replace": "http://127.0.0.1:11/"}]
    mirrors = {"mirrors": rules, "huggingface": {"endpoint": HUB_MIRROR}}
    monkeypatch.setenv("PROVISION_MIRRORS", str(_mirrors_file(tmp_path, mirrors)))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    session = HostSession(load_manifest(manifest))
    rendered = json.dumps(session.expansion.payload())
    assert _upstream_hosts(rendered) == [], rendered
    specs = {r.id: r.spec for r in session.expansion.resources}
    assert specs["git:tools/x"]["repo"] == GIT_MIRROR + "example/x"
    assert specs["download:models/vae/ae.safetensors"]["token"] == TOKEN, "the Hub's mirror is meant for it"
    withheld = specs["download:models/loras/l.safetensors"]
    assert withheld["url"] == "http://127.0.0.1:11/loras/resolve/main/l.safetensors" and "token" not in withheld
    assert any("download:models/loras/l.safetensors: the mirror 127.0.0.1:11 replaces huggingface.co" in note
               for note in session.notes())
    extra = specs["pip:venv#extra"]
    assert extra["packages"][0]["url"] == GIT_MIRROR + "example/tool/releases/download/1.0/t.whl"
    assert extra["find_links"] == ["cache/wheels", GIT_MIRROR + "example/wheels/releases"]
    assert extra["extra_index_urls"] == [FILES_MIRROR + "pytorch/whl/cpu"]
    assert extra["index_url"] == specs["pip:venv"]["index_url"] == FILES_MIRROR + "pypi/simple", \
        "pip installs that name no index get PyPI's mirror"


# --- a real clone and a real pip install -----------------------------------------------------------------


def test_a_real_clone_and_pip_install_go_to_the_mirrors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upstream = make_upstream(tmp_path / "git" / "example-org", "tool")
    tag_commit = upstream.commit({"tool.py": "print('from the mirror')\n"}, "v1.0", tag="v1.0")
    house = tmp_path / "wheelhouse"
    # Names PyPI does not have: only the mirror can serve them.
    build_wheel(house, "provision-mirror-probe", "1.0.0", requires=["provision-mirror-dep==1.0.0"])
    build_wheel(house, "provision-mirror-dep", "1.0.0")
    web = tmp_path / "web"
    write_simple_index(house, web / "pypi")
    hub = HubState(token=TOKEN)
    hub.add("example-org/weights", "vae.safetensors", os.urandom(2048))
    root = tmp_path / "root"
    manifest = tmp_path / "mirrored.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "mirrored",
        "target": {"connection": "local", "root": str(root)},
        "python": {"version": f"{sys.version_info[0]}.{sys.version_info[1]}"},
        "resources": [
            {"kind": "git", "path": "tools/tool", "repo": "https://github.com/example-org/tool", "ref": "v1.0"},
            {"kind": "venv", "path": "venv"},
            {"kind": "pip", "venv": "venv", "packages": ["provision-mirror-probe==1.0.0"]},
            {"kind": "download", "path": "models/vae/vae.safetensors",
             "url": "https://huggingface.co/example-org/weights/resolve/main/vae.safetensors",
             "auth": {"from_env": "HF_TOKEN"}},
        ],
    }, sort_keys=False))
    with serve_directory(web) as files, serve_hub(hub) as endpoint:
        mirrors = _mirrors_file(tmp_path, {
            "mirrors": [{"prefix": "https://github.com/", "replace": (tmp_path / "git").as_uri() + "/"},
                        {"prefix": "https://pypi.org/simple", "replace": f"{files}/pypi/simple"}],
            "huggingface": {"endpoint": endpoint},
        })
        monkeypatch.setenv("PROVISION_MIRRORS", str(mirrors))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        planned = _provision("plan", "--json", str(manifest))
        assert planned.returncode == 2, planned.stderr
        assert _upstream_hosts(planned.stdout) == [], planned.stdout

        # The controller's download cache fetches the model, through the mirror, and pushes it to the host.
        first = HostSession(load_manifest(manifest), RunOptions(download_cache=tmp_path / "cache")).apply()
        assert first.ok, first.as_json()
        assert first.pushed == ["download:models/vae/vae.safetensors"]
        second = HostSession(load_manifest(manifest)).apply()
        assert second.ok and changed(second) == [], second.as_json()

    checkout = root / "tools" / "tool"
    assert git("rev-parse", "HEAD", cwd=checkout) == tag_commit
    assert git("remote", "get-url", "origin", cwd=checkout) == (tmp_path / "git").as_uri() + "/example-org/tool"
    shown = subprocess.run([str(root / "venv" / "bin" / "python"), "-m", "pip", "show", "provision-mirror-probe"],
                           capture_output=True, text=True, check=True).stdout
    assert "Version: 1.0.0" in shown
    [call] = hub.served("example-org/weights", "vae.safetensors")
    assert call.authorization == f"Bearer {TOKEN}", "the Hub's mirror receives the Hub's token"
    assert call.user_agent == "provision-controller", "fetched once, by the controller's cache"
    assert (root / "models" / "vae" / "vae.safetensors").stat().st_size == 2048


def _provision(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                          timeout=300, check=False)


# --- the controller's own fetches -----------------------------------------------------------------------


@dataclass
class Redirected:
    """A server that redirects to another origin (as the Hub does to its CDN), and the Authorization
    header each side heard."""

    start: str
    at_start: list[str | None]
    elsewhere: list[str | None]


@pytest.fixture
def redirected() -> Iterator[Redirected]:
    at_start: list[str | None] = []
    elsewhere: list[str | None] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            elsewhere.append(self.headers.get("Authorization"))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_handler(Elsewhere) as other:
        class Redirect(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                at_start.append(self.headers.get("Authorization"))
                self.send_response(302)
                self.send_header("Location", other.replace("127.0.0.1", "localhost") + "/signed")
                self.send_header("Content-Length", "0")
                self.end_headers()

        with serve_handler(Redirect) as start:
            yield Redirected(start, at_start, elsewhere)


def test_the_lock_fetcher_keeps_the_token_on_the_host_it_was_meant_for(redirected: Redirected,
                                                                       tmp_path: Path) -> None:
    sha256, size = download(f"{redirected.start}/wheels/w.whl", tmp_path / "w.whl", TOKEN)
    assert (tmp_path / "w.whl").read_bytes() == b'{"ok": true}'
    assert (sha256, size) == (hashlib.sha256(b'{"ok": true}').hexdigest(), 12)
    assert redirected.at_start == [f"Bearer {TOKEN}"]
    assert redirected.elsewhere == [None], "the redirect target never sees the bearer token"


def test_the_host_keeps_the_token_on_the_host_it_was_meant_for(redirected: Redirected, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "download.yaml"
    manifest.write_text(yaml.safe_dump({
        "name": "download", "target": {"connection": "local", "root": str(tmp_path / "root")},
        "resources": [{"kind": "download", "path": "models/vae/config.json", "url": f"{redirected.start}/config.json",
                       "auth": {"from_env": "HF_TOKEN"}}],
    }))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    report = HostSession(load_manifest(manifest)).apply()
    assert report.ok, report.as_json()
    assert (tmp_path / "root" / "models" / "vae" / "config.json").read_bytes() == b'{"ok": true}'
    assert redirected.at_start == [f"Bearer {TOKEN}"]
    assert redirected.elsewhere == [None], "the redirect target never sees the bearer token"
