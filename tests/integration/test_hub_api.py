"""The controller asks the Hub through huggingface_hub (HfApi for locking, hf_hub_download for locking's git
files and the download cache) at the mirrors file's endpoint; the stand-in Hub answers the way the real one
does, errors included."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoFile

from provisioner.download_cache import DownloadCache
from provisioner.lock.errors import LockError
from provisioner.lock.hub import HubClient, HubFile
from tests.support.fake_hub import HubState, resolve_url, serve_hub
from tests.support.servers import free_port

MODEL = b"weights" * 5000
CONFIG = b'{"layers": 2}\n'


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[HubState, str]]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token file of this machine's user
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    state = HubState()
    state.add("org/repo", "model.safetensors", MODEL)
    state.add("org/repo", "config.json", CONFIG)
    with serve_hub(state) as endpoint:
        yield state, endpoint


def test_a_revision_gives_its_commit_and_lfs_hashes_in_one_call(hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    client = HubClient(endpoint)
    revision = client.revision("org/repo", "main")
    assert revision.sha == state.snapshot("org/repo")
    assert revision.files["model.safetensors"] == HubFile(len(MODEL), hashlib.sha256(MODEL).hexdigest())
    assert revision.files["config.json"] == HubFile(len(CONFIG), None), "kept in git: no sha256 from the API"
    assert client.revision("org/repo", "main") is revision
    [call] = state.calls
    assert "blobs=True" in call.path or "blobs=true" in call.path
    assert call.user_agent is not None and "hf_hub/" in call.user_agent


def test_a_git_file_is_hashed_from_a_download_at_the_commit(hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    client = HubClient(endpoint)
    commit = client.revision("org/repo", "main").sha
    assert client.file_hash("org/repo", commit, "config.json") == (hashlib.sha256(CONFIG).hexdigest(), len(CONFIG))
    assert {c.method for c in state.served("org/repo", "config.json", commit)} == {"HEAD", "GET"}


def test_the_token_is_sent_and_a_wrong_one_is_named(hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    state.token = "hf_locktoken_5566"
    assert HubClient(endpoint, state.token).revision("org/repo", "main").sha
    assert state.calls[-1].authorization == f"Bearer {state.token}"
    with pytest.raises(LockError, match="refused access.*set HF_TOKEN"):
        HubClient(endpoint, "hf_wrong_token_000").revision("org/repo", "main")
    with pytest.raises(LockError, match="refused access.*set HF_TOKEN"):
        HubClient(endpoint).revision("org/repo", "main")


def test_missing_repo_revision_and_gated_files_get_their_fix(hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    client = HubClient(endpoint)
    with pytest.raises(LockError, match="org/nothing.*refused access.*or check the repo name"):
        client.revision("org/nothing", "main")  # the Hub answers 401 RepoNotFound without a token
    with pytest.raises(LockError, match="not found.*check the repo name and `revision`"):
        client.revision("org/repo", "v9")
    state.gated.add("org/repo")
    commit = client.revision("org/repo", "main").sha  # a gated repo's metadata is public
    with pytest.raises(LockError, match="gated.*accept its terms"):
        client.file_hash("org/repo", commit, "config.json")


def test_an_endpoint_that_does_not_answer_names_the_mirrors_file() -> None:
    with pytest.raises(LockError, match="check the network, or map huggingface"):
        HubClient(f"http://127.0.0.1:{free_port()}").revision("org/repo", "main")


def test_the_stand_in_answers_paths_info_like_the_hub(hub: tuple[HubState, str]) -> None:
    _, endpoint = hub
    entries = HfApi(endpoint=endpoint).get_paths_info("org/repo", ["model.safetensors", "config.json", "absent.bin"],
                                                      revision="main", expand=True)
    by_path = {e.path: e for e in entries}
    assert set(by_path) == {"model.safetensors", "config.json"}
    model = by_path["model.safetensors"]
    assert isinstance(model, RepoFile) and model.lfs is not None
    assert (model.lfs.sha256, model.lfs.size) == (hashlib.sha256(MODEL).hexdigest(), len(MODEL))
    config = by_path["config.json"]
    assert isinstance(config, RepoFile) and config.lfs is None and config.size == len(CONFIG)


# -- the controller's download cache --------------------------------------------------------------------

def test_the_controller_cache_fetches_a_hub_file_through_huggingface_hub(hub: tuple[HubState, str],
                                                                         tmp_path: Path) -> None:
    state, endpoint = hub
    sha = hashlib.sha256(MODEL).hexdigest()
    cached = DownloadCache(tmp_path / "cache").get(
        resolve_url(endpoint, "org/repo", "model.safetensors"), sha256=sha, size=len(MODEL),
        hub={"repo": "org/repo", "revision": "main", "file": "model.safetensors"})
    assert cached.fetched and cached.path.read_bytes() == MODEL
    [head] = state.served("org/repo", "model.safetensors")
    assert head.method == "HEAD" and head.user_agent is not None and "hf_hub/" in head.user_agent
    assert len(state.fetched(sha)) == 1
    assert sorted(p.name for p in cached.path.parent.iterdir()) == [sha, f"{sha}.json", f"{sha}.lock"]


def test_the_controller_cache_links_from_the_controllers_hugging_face_cache(hub: tuple[HubState, str],
                                                                           tmp_path: Path) -> None:
    state, endpoint = hub
    sha = hashlib.sha256(MODEL).hexdigest()
    blob = tmp_path / "hf-home" / "hub" / "models--org--repo" / "blobs" / sha
    blob.parent.mkdir(parents=True)
    blob.write_bytes(MODEL)
    cached = DownloadCache(tmp_path / "cache").get(
        resolve_url(endpoint, "org/repo", "model.safetensors"), sha256=sha, size=len(MODEL),
        hub={"repo": "org/repo", "revision": "main", "file": "model.safetensors"})
    assert cached.path.stat().st_ino == blob.stat().st_ino
    assert state.calls == [] and state.cdn_calls == []
