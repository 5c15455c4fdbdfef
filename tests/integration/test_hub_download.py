"""Hub files the way Hugging Face users expect: huggingface_hub in the target venv (a real wheel installed
into a real venv) against the stand-in Hub through HF_ENDPOINT, the stdlib fallback, the host's Hugging
Face cache, one lock per destination across processes, and the token never in any argv."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.engine import HostSession, RunOptions
from provisioner.manifest import load_manifest
from tests.support.fake_hub import HubState, resolve_url, serve_hub
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, changed, converge, plan

REPO = "org/flux"
FILE = "transformer/model.safetensors"
MODEL = os.urandom(2 * 1024 * 1024 + 11)
SHA = hashlib.sha256(MODEL).hexdigest()
TOKEN = "hf_CANARYhubtok3nQ52w"
DEST = "models/diffusion_models/model.safetensors"


@pytest.fixture(scope="module")
def hf_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv with the real huggingface_hub from the package index, as ComfyUI's venv has it."""
    venv = tmp_path_factory.mktemp("hfvenv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", "huggingface_hub"],
                   check=True, timeout=600, capture_output=True)
    return str(venv / "bin/python")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv without huggingface_hub (a fresh one, before its packages are installed)."""
    venv = tmp_path_factory.mktemp("barevenv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    return str(venv / "bin/python")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[HubState, str]]:
    # The host's Hugging Face settings are the test's own: an empty cache, no token file, no HF_TOKEN.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    state = HubState()
    state.add(REPO, FILE, MODEL)
    with serve_hub(state) as endpoint:
        yield state, endpoint


@pytest.fixture
def local(tmp_path: Path) -> TargetHost:
    return TargetHost("local", "local", str(tmp_path / "root"))


def _manifest(tmp_path: Path, host: TargetHost, endpoint: str, python: str | None, **extra: object) -> Path:
    spec: dict[str, object] = {
        "kind": "download", "path": DEST, "url": resolve_url(endpoint, REPO, FILE), "sha256": SHA,
        "size": len(MODEL), "hub": {"repo": REPO, "revision": "main", "file": FILE, "python": python}}
    spec.update(extra)
    return write_manifest(tmp_path, host, {"resources": [spec]})


def _agent_gets(state: HubState) -> list[str | None]:
    """User agents of the GETs of the resolve URL: the agent's own client asks there; huggingface_hub HEADs."""
    return [c.user_agent for c in state.served(REPO, FILE) if c.method == "GET"]


def _converge_logged(manifest: Path, environ: dict[str, str] | None = None) -> str:
    """Apply (which must succeed), then apply again (which must change nothing); the first apply's log lines."""
    lines: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "log":
            lines.append(str(event.get("message")))

    first = HostSession(load_manifest(manifest), RunOptions(), environ=environ).apply(on_event)
    assert first.ok, first.as_json()
    second = apply(manifest, environ)
    assert second.ok and changed(second) == [], second.as_json()
    return "\n".join(lines) + json.dumps(first.as_json())


def test_hub_file_comes_through_huggingface_hub_at_the_endpoint(local: TargetHost, tmp_path: Path, hf_python: str,
                                                                 hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    state.token = TOKEN
    manifest = _manifest(tmp_path, local, endpoint, hf_python, auth={"from_env": "TEST_HF_TOKEN"})
    logs = _converge_logged(manifest, {"TEST_HF_TOKEN": TOKEN})
    assert hashlib.sha256(Path(local.path(DEST)).read_bytes()).hexdigest() == SHA
    [head] = [c for c in state.served(REPO, FILE) if c.method == "HEAD"]
    # huggingface_hub asked this endpoint (HF_ENDPOINT honoured), with the token, and fetched the blob once.
    assert head.user_agent is not None and "hf_hub/" in head.user_agent
    assert head.authorization == f"Bearer {TOKEN}"
    assert [c.authorization for c in state.fetched(SHA)] == [None], "the CDN got no token"
    assert _agent_gets(state) == [], "the agent's own client was not needed"
    assert "downloaded by huggingface_hub" in logs
    assert TOKEN not in logs
    leftovers = sorted(p.name for p in Path(local.path(DEST)).parent.iterdir())
    assert leftovers == ["model.safetensors"], "no .part, .hub or .lock left beside it"


def test_the_token_reaches_huggingface_hub_in_its_environment_never_in_argv(
        local: TargetHost, tmp_path: Path, hf_python: str, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    state.token = TOKEN
    state.bytes_per_second = 2 * 1024 * 1024  # about a second of transfer, to watch the processes meanwhile
    manifest = _manifest(tmp_path, local, endpoint, hf_python, auth={"from_env": "TEST_HF_TOKEN"})
    seen: list[bytes] = []
    hits: list[bytes] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid.isdigit() else b""
                except OSError:
                    continue
                if b"hf_hub_download" in cmdline:
                    seen.append(cmdline)
                if TOKEN.encode() in cmdline:
                    hits.append(cmdline)
            stop.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        report = apply(manifest, {"TEST_HF_TOKEN": TOKEN})
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert report.ok, report.as_json()
    assert seen, "the huggingface_hub program was sampled while it ran"
    assert hits == []
    assert state.fetched(SHA), "huggingface_hub did the download"


def test_without_huggingface_hub_the_agent_downloads_itself(local: TargetHost, tmp_path: Path, bare_python: str,
                                                           hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    converge(_manifest(tmp_path, local, endpoint, bare_python))
    assert _agent_gets(state) == ["provision-agent"]
    assert [c.method for c in state.served(REPO, FILE)] == ["GET"], "no huggingface_hub HEAD"
    assert hashlib.sha256(Path(local.path(DEST)).read_bytes()).hexdigest() == SHA


def test_before_the_venv_exists_the_agent_downloads_itself(local: TargetHost, tmp_path: Path,
                                                          hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    converge(_manifest(tmp_path, local, endpoint, "venv/bin/python"))
    assert _agent_gets(state) == ["provision-agent"]


def test_a_hub_that_omits_x_repo_commit_fails_huggingface_hub_and_the_agent_falls_back(
        local: TargetHost, tmp_path: Path, hf_python: str, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    state.omit_headers.add("X-Repo-Commit")  # what a plain file server (not a Hub mirror) looks like
    logs = _converge_logged(_manifest(tmp_path, local, endpoint, hf_python))
    assert "huggingface_hub could not download it" in logs
    assert "X-Repo-Commit" in logs
    assert _agent_gets(state) == ["provision-agent"]


def test_a_gated_repo_without_a_token_fails_with_the_fix(local: TargetHost, tmp_path: Path, hf_python: str,
                                                         hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    state.gated.add(REPO)
    report = apply(_manifest(tmp_path, local, endpoint, hf_python))
    assert not report.ok
    error = report.resources[0]["error"]
    assert "GatedRepoError" in error and "HF_TOKEN" in error, error
    assert _agent_gets(state) == [], "the Hub's answer is final: no second try with another client"


def _seed_cache(home: Path, content: bytes, blob_name: str) -> Path:
    """huggingface_hub's cache layout: blobs named by sha256, a snapshot link, refs/main."""
    folder = home / "hub" / f"models--{REPO.replace('/', '--')}"
    commit = "c" * 40
    blob = folder / "blobs" / blob_name
    blob.parent.mkdir(parents=True)
    blob.write_bytes(content)
    link = folder / "snapshots" / commit / FILE
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return blob


def test_a_file_in_the_hugging_face_cache_is_linked_not_downloaded(local: TargetHost, tmp_path: Path,
                                                                   hf_python: str, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    blob = _seed_cache(tmp_path / "hf-home", MODEL, SHA)
    manifest = _manifest(tmp_path, local, endpoint, hf_python)
    [row] = plan(manifest).resources
    assert "from the Hugging Face cache" in row["changes"][0]["reason"], row
    logs = _converge_logged(manifest)
    assert state.calls == [] and state.cdn_calls == [], "nothing reached the Hub"
    assert "from the Hugging Face cache" in logs
    placed = Path(local.path(DEST))
    assert placed.stat().st_ino == blob.stat().st_ino, "a hard link: same filesystem, no second copy"
    assert not placed.is_symlink()
    blob.unlink()  # pruning the cache leaves the model in place
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == SHA


def test_a_cache_file_with_the_wrong_sha256_is_not_used(local: TargetHost, tmp_path: Path, hf_python: str,
                                                       hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    wrong = bytearray(MODEL)
    wrong[1000] ^= 1
    blob = _seed_cache(tmp_path / "hf-home", bytes(wrong), SHA)  # named by the right sha256, holding other bytes
    converge(_manifest(tmp_path, local, endpoint, hf_python))
    placed = Path(local.path(DEST))
    assert placed.stat().st_ino != blob.stat().st_ino
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == SHA
    assert state.fetched(SHA), "downloaded instead"
    assert blob.read_bytes() == bytes(wrong), "the cache is the user's: left as it was"


# The agent's download kind run on its own by two processes at once, as two controllers sharing a models
# root would (the root lock, taken per root, does not serialise them).
_CONCURRENT = r"""
import json, sys
from provisioner.agent.kinds import download
from provisioner.agent.protocol import Context
spec = json.loads(sys.argv[2])
ctx = Context(sys.argv[1])
observed = download.probe(spec, ctx)
changes = download.diff(spec, observed, ctx)
if changes:
    download.apply(spec, observed, changes, ctx)
"""


@pytest.mark.parametrize("with_hf", [False, True], ids=["agent-client", "huggingface_hub"])
def test_two_processes_downloading_one_file_end_with_one_correct_file(
        tmp_path: Path, hub: tuple[HubState, str], hf_python: str, with_hf: bool) -> None:
    state, endpoint = hub
    # The first download is held in flight (not merely slowed) until the other run is seen waiting on the
    # per-file lock, so the two runs overlap however slowly a loaded machine starts either process.
    state.hold = threading.Event()
    state.hold_seconds = 300.0
    root = tmp_path / "root"
    root.mkdir()
    spec = {"kind": "download", "path": DEST, "url": resolve_url(endpoint, REPO, FILE), "sha256": SHA,
            "size": len(MODEL), "hub": {"repo": REPO, "revision": "main", "file": FILE,
                                         "python": hf_python if with_hf else None}}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    logs = [tmp_path / f"run{i}.out" for i in range(2)]
    runs = []
    try:
        for log in logs:
            with log.open("wb") as out:
                runs.append(subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(root), json.dumps(spec)],
                                             env=env, stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while not any("another run is downloading this file" in log.read_text() for log in logs):
            if time.monotonic() > deadline or any(run.poll() is not None for run in runs):
                pytest.fail("no run was seen waiting for the other's download within 60 s (or one ended first): "
                            + repr([log.read_text() for log in logs]))
            time.sleep(0.05)
        state.hold.set()
        for run in runs:
            run.wait(timeout=120)
    finally:
        state.hold.set()
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    outputs = [log.read_text() for log in logs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert hashlib.sha256((root / DEST).read_bytes()).hexdigest() == SHA
    assert len(state.fetched(SHA)) == 1, "the second run waited for the first and reused its file"
    assert "another run" in "".join(outputs)
    assert sorted(p.name for p in (root / DEST).parent.iterdir()) == ["model.safetensors"]
