"""The controller's download cache: each file fetched once on the controller, pushed to the hosts that need it.

Everything is real: the Hub stand-in over HTTP (it records who asked for what), sshd hosts on loopback, the
agent on each host. Who fetched a file is told by its User-Agent: the controller's cache sends
`provision-controller`, the agent on a host `provision-agent`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from provisioner.agent_client import AgentClient
from provisioner.cli import cli
from provisioner.download_cache import DownloadCache, DownloadCacheError
from provisioner.engine import HostSession, RunOptions
from provisioner.expand import expand
from provisioner.fleet.inventory import InventoryError, load_inventory
from provisioner.fleet.planner import FleetPlan
from provisioner.fleet.results import FleetApplyResult
from provisioner.fleet.runner import FleetApply, FleetOptions
from provisioner.ledger import Ledger
from provisioner.manifest import load_manifest
from provisioner.transport import ConnectOptions, LocalTransport
from tests.support.fake_hub import HubState, serve_hub
from tests.support.fleet_hosts import FleetServers, fleet_servers, host_name, read_generations, write_fleet
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import plan

pytestmark = pytest.mark.timeout(240)

FLEET_HOSTS = 3
REPO = "org/models"
MODEL_A = os.urandom(2 * 1024 * 1024 + 7)
MODEL_B = os.urandom(1024 * 1024 + 3)
PATH_A = "models/unet/a.safetensors"
PATH_B = "models/clip/b.safetensors"
CONTROLLER = "provision-controller"
AGENT = "provision-agent"


@pytest.fixture
def hub() -> Iterator[tuple[HubState, str]]:
    state = HubState()
    with serve_hub(state) as endpoint:
        yield state, endpoint


def _download(state: HubState, endpoint: str, path: str, content: bytes, *, pinned: bool = True,
              **extra: Any) -> dict[str, Any]:
    """A download resource for `content`, served by the hub under the resource's file name."""
    name = path.rsplit("/", 1)[1]
    sha = state.add(REPO, name, content)
    spec: dict[str, Any] = {"kind": "download", "path": path, "url": f"{endpoint}{state.url_path(REPO, name)}"}
    if pinned:
        spec.update(sha256=sha, size=len(content))
    spec.update(extra)
    return spec


def _two_models(state: HubState, endpoint: str, **extra: Any) -> list[dict[str, Any]]:
    return [_download(state, endpoint, PATH_A, MODEL_A, **extra), _download(state, endpoint, PATH_B, MODEL_B, **extra)]


def _served(state: HubState, path: str) -> list[str | None]:
    """Who fetched a file from the hub, in order (by User-Agent)."""
    return [call.user_agent for call in state.served(REPO, path.rsplit("/", 1)[-1])]


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# -- a fleet ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServers]:
    with fleet_servers(tmp_path_factory.mktemp("cache-sshd"), FLEET_HOSTS) as running:
        yield running


class CacheFleet:
    """A fleet whose manifest downloads two models from the hub, with `download_cache: {dir: cache}`."""

    def __init__(self, servers: FleetServers, directory: Path, resources: list[dict[str, Any]],
                 count: int = FLEET_HOSTS, **inventory: Any) -> None:
        self.servers = servers
        self.directory = directory
        self.roots = directory / "roots"
        self.cache = directory / "cache"
        self.manifest = directory / "models.yaml"
        self.manifest.write_text(yaml.safe_dump({"name": "models", "gpu": {"arch": "none"}, "resources": resources},
                                                sort_keys=False))
        extra = {"download_cache": {"dir": "cache"}, **inventory.pop("extra", {})}
        self.inventory = write_fleet(directory, servers, self.roots, "models.yaml", count=count, extra=extra,
                                     **inventory)
        self.ledger = Ledger(directory / "state" / "ledger.sqlite")
        self.count = count
        self.notes: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def _note(self, host: str, phase: str, message: str) -> None:
        with self._lock:
            self.notes.append((host, phase, message))

    def options(self) -> FleetOptions:
        connect = ConnectOptions(known_hosts=self.servers.known_hosts)
        return FleetOptions(forks=self.count, run=RunOptions(connect=connect))

    def apply(self) -> FleetApplyResult:
        self.notes.clear()
        inventory = load_inventory(self.inventory)
        result = FleetApply(inventory, inventory.hosts, self.ledger, self.options(), on_progress=self._note).run()
        assert result.exit_code() == 0, [(h.name, h.status, h.error) for h in result.hosts]
        return result

    def plan_exit_code(self) -> int:
        inventory = load_inventory(self.inventory)
        result = FleetPlan(inventory, inventory.hosts, self.ledger, self.options()).run()
        return result.exit_code()

    def root(self, index: int) -> Path:
        return self.roots / host_name(index)

    def noted(self, phase: str) -> list[tuple[str, str]]:
        return sorted((host, message) for host, p, message in self.notes if p == phase)


@pytest.fixture
def cache_fleet(servers: FleetServers, tmp_path: Path, hub: tuple[HubState, str]) -> CacheFleet:
    servers.ensure_running()
    return CacheFleet(servers, tmp_path, _two_models(*hub))


@pytest.mark.ssh
def test_fleet_fetches_each_file_once_and_pushes_it_to_every_host(cache_fleet: CacheFleet,
                                                                   hub: tuple[HubState, str]) -> None:
    state, _ = hub
    cache_fleet.apply()
    for index in range(FLEET_HOSTS):
        root = cache_fleet.root(index)
        assert (root / PATH_A).read_bytes() == MODEL_A
        assert (root / PATH_B).read_bytes() == MODEL_B
        assert not (root / ".provision" / "incoming").exists(), "staged files are consumed, the folder removed"
    assert _served(state, PATH_A) == [CONTROLLER], "fetched once for the whole fleet, by the controller"
    assert _served(state, PATH_B) == [CONTROLLER]
    hosts = [host_name(i) for i in range(FLEET_HOSTS)]
    assert sorted(host for host, _ in cache_fleet.noted("pushed")) == sorted(hosts * 2)
    assert all("from the controller cache" in message for _, message in cache_fleet.noted("pushed"))
    assert (cache_fleet.cache / "sha256" / _sha(MODEL_A)).read_bytes() == MODEL_A, "relative to the inventory"

    # `staged` is not part of what the host records or of the resource's identity: no drift without the cache.
    digests = {r.id: r.digest for r in expand(load_manifest(cache_fleet.manifest)).resources}
    for index in range(FLEET_HOSTS):
        records = read_generations(cache_fleet.root(index))
        assert "staged" not in json.dumps(records) and "incoming" not in json.dumps(records)
        assert {r["id"]: r["digest"] for r in records[-1]["resources"]} == digests
    assert cache_fleet.plan_exit_code() == 0

    calls = len(state.calls)
    again = cache_fleet.apply()
    assert [h.changed for h in again.hosts] == [0] * FLEET_HOSTS
    assert len(state.calls) == calls, "a converged fleet downloads nothing"
    assert cache_fleet.noted("pushed") == [] and cache_fleet.noted("caching") == [], "and pushes nothing"


@pytest.mark.ssh
def test_a_host_that_lost_its_copy_gets_it_from_the_cache_without_the_hub(cache_fleet: CacheFleet,
                                                                          hub: tuple[HubState, str]) -> None:
    state, _ = hub
    cache_fleet.apply()
    calls = len(state.calls)
    (cache_fleet.root(1) / PATH_B).unlink()

    result = cache_fleet.apply()
    assert len(state.calls) == calls, "served from the controller cache: no request reached the hub"
    assert [host for host, _ in cache_fleet.noted("pushed")] == [host_name(1)]
    assert {h.name: h.changed for h in result.hosts} == {host_name(0): 0, host_name(1): 1, host_name(2): 0}
    assert (cache_fleet.root(1) / PATH_B).read_bytes() == MODEL_B


@pytest.mark.ssh
def test_a_gated_file_gets_its_token_as_a_bearer_header_and_nowhere_else(
        servers: FleetServers, tmp_path: Path, hub: tuple[HubState, str], monkeypatch: pytest.MonkeyPatch) -> None:
    state, endpoint = hub
    state.token = "hf_cachetoken_2468013579"
    servers.ensure_running()
    resources = [_download(state, endpoint, PATH_A, MODEL_A, auth={"from_env": "TEST_CACHE_HF_TOKEN"})]
    # The inventory names one directory; the command line's --download-cache wins.
    fleet = CacheFleet(servers, tmp_path, resources, count=2, extra={"download_cache": {"dir": "not-this-one"}})
    chosen = tmp_path / "chosen-cache"
    monkeypatch.setenv("TEST_CACHE_HF_TOKEN", state.token)
    state_dir = tmp_path / "state"
    result = CliRunner().invoke(cli, ["--ledger", f"sqlite:///{state_dir / 'ledger.sqlite'}", "fleet", "apply",
                                      "-v", "--known-hosts", str(servers.known_hosts), "--download-cache",
                                      str(chosen), str(fleet.inventory)])
    assert result.exit_code == 0, result.output
    assert "pushed from the controller cache" in result.output
    assert [(c.authorization, c.user_agent) for c in state.calls] == [(f"Bearer {state.token}", CONTROLLER)]
    assert (chosen / "sha256" / _sha(MODEL_A)).is_file() and not (tmp_path / "not-this-one").exists()
    for index in range(2):
        assert (fleet.root(index) / PATH_A).read_bytes() == MODEL_A

    assert state.token not in result.output + result.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in written) and any(p.name.endswith(".json") for p in written)
    leaks = [p for p in written if state.token.encode() in p.read_bytes()]
    assert leaks == [], "the token is in no log, ledger, rollout state, cache record or host file"


@pytest.mark.ssh
def test_become_stages_through_the_login_users_folder_and_sudo(request: pytest.FixtureRequest, tmp_path: Path,
                                                               hub: tuple[HubState, str]) -> None:
    if shutil.which("sudo") is None:
        pytest.skip("sudo is not installed (apt-get install -y sudo)")
    from tests.support.sshd import ssh_target_host

    host = ssh_target_host(request, tmp_path)
    host.target_extra["become"] = True
    incoming = Path.home() / ".cache" / "provision" / "incoming"
    before = set(incoming.iterdir()) if incoming.is_dir() else set()
    manifest = write_manifest(tmp_path, host, {"resources": [_download(*hub, PATH_A, MODEL_A)]})
    report = HostSession(load_manifest(manifest), RunOptions(download_cache=tmp_path / "cache")).apply()
    assert report.ok and report.pushed == [f"download:{PATH_A}"], report.as_json()
    assert Path(host.path(PATH_A)).read_bytes() == MODEL_A
    assert Path(host.path(PATH_A)).stat().st_uid == 0, "owned by the sudo'ed user, as if it had written it"
    assert (set(incoming.iterdir()) if incoming.is_dir() else set()) == before, "nothing left in the login user's"
    assert _served(hub[0], PATH_A) == [CONTROLLER]


# -- one host --------------------------------------------------------------------------------------------


def test_cli_apply_with_a_download_cache(host: TargetHost, tmp_path: Path, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    unpinned = os.urandom(300_000)
    resources = [_download(state, endpoint, PATH_A, MODEL_A),
                 _download(state, endpoint, "models/vae/c.bin", unpinned, pinned=False)]
    manifest = write_manifest(tmp_path, host, {"resources": resources})
    cache = tmp_path / "cache"

    first = CliRunner().invoke(cli, ["apply", "--download-cache", str(cache), str(manifest)])
    assert first.exit_code == 0, first.output
    assert first.output.count("pushed from the controller cache") == 2
    assert host.run(["sha256sum", host.path(PATH_A)]).stdout.split()[0] == _sha(MODEL_A)
    assert host.run(["sha256sum", host.path("models/vae/c.bin")]).stdout.split()[0] == _sha(unpinned)
    assert not host.exists(".provision/incoming")
    assert _served(state, PATH_A) == [CONTROLLER] and _served(state, "c.bin") == [CONTROLLER]
    url_key = hashlib.sha256(resources[1]["url"].encode()).hexdigest()
    assert (cache / "url" / url_key).read_bytes() == unpinned, "unpinned files are keyed by their URL"

    again = CliRunner().invoke(cli, ["apply", "--download-cache", str(cache), str(manifest)])
    assert again.exit_code == 0, again.output
    assert "pushed" not in again.output and "Applied: 0 changed" in again.output
    assert len(state.calls) == 2
    assert plan(manifest).exit_code() == 0, "the same resources without the cache: nothing to do"


def test_a_staged_file_that_does_not_verify_is_discarded_and_the_host_fetches_the_url(
        host: TargetHost, tmp_path: Path, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    manifest = write_manifest(tmp_path, host, {"resources": [_download(state, endpoint, PATH_A, MODEL_A)]})
    options = RunOptions(download_cache=tmp_path / "cache")
    assert HostSession(load_manifest(manifest), options).apply().ok

    # Corrupt the cached copy but keep its size and mtime: the controller trusts its record and pushes it;
    # the agent's own check is what catches it.
    cached = tmp_path / "cache" / "sha256" / _sha(MODEL_A)
    _flip_byte(cached, keep_mtime=True)
    host.run(["rm", host.path(PATH_A)])
    events: list[dict[str, Any]] = []
    report = HostSession(load_manifest(manifest), options).apply(events.append)
    assert report.ok and report.pushed == [f"download:{PATH_A}"], report.as_json()
    assert _served(state, PATH_A) == [CONTROLLER, AGENT], "the host fell back to the URL"
    assert any(e["event"] == "log" and "discarded it" in e["message"] for e in events)
    assert host.run(["sha256sum", host.path(PATH_A)]).stdout.split()[0] == _sha(MODEL_A)
    assert not host.exists(".provision/incoming")


def test_a_staged_file_on_another_filesystem_is_copied_into_place(tmp_path: Path, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    host = TargetHost("local", "local", str(tmp_path / "root"))
    # .provision (and so the incoming folder) is a tmpfs of its own, the models on the temp dir's filesystem.
    # A mount, not a link: the agent refuses a state folder that is a link.
    state_dir = Path(host.path(".provision"))
    state_dir.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "provision-test", str(state_dir)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"needs to mount a tmpfs: {mounted.stderr.strip()}")
    try:
        assert state_dir.stat().st_dev != tmp_path.stat().st_dev
        manifest = write_manifest(tmp_path, host, {"resources": [_download(state, endpoint, PATH_A, MODEL_A)]})
        report = HostSession(load_manifest(manifest), RunOptions(download_cache=tmp_path / "cache")).apply()
        assert report.ok and report.pushed == [f"download:{PATH_A}"], report.as_json()
        assert Path(host.path(PATH_A)).read_bytes() == MODEL_A
        assert _served(state, PATH_A) == [CONTROLLER]
        assert not (state_dir / "incoming").exists()
        assert [p.name for p in Path(host.path("models/unet")).iterdir()] == ["a.safetensors"], "no temp file left"
    finally:
        subprocess.run(["umount", str(state_dir)], check=False)


def test_the_agent_takes_staged_files_only_from_the_incoming_folder(tmp_path: Path,
                                                                    hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    host = TargetHost("local", "local", str(tmp_path / "root"))
    manifest = write_manifest(tmp_path, host, {"resources": [_download(state, endpoint, PATH_A, MODEL_A)]})
    outside = tmp_path / "precious.safetensors"
    outside.write_bytes(MODEL_A)
    request = {"root": host.root, "options": {}, **expand(load_manifest(manifest)).payload()}
    request["resources"][0]["spec"]["staged"] = str(outside)
    with LocalTransport() as transport:
        result = AgentClient(transport).call("apply", request)
    assert [r["outcome"] for r in result["resources"]] == ["changed"]
    assert outside.read_bytes() == MODEL_A, "a file outside .provision/incoming is neither moved nor deleted"
    assert _served(state, PATH_A) == [AGENT], "the agent fetched the URL instead"


def test_a_corrupted_cached_file_is_detected_and_fetched_again(tmp_path: Path, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    host = TargetHost("local", "local", str(tmp_path / "root"))
    manifest = write_manifest(tmp_path, host, {"resources": [_download(state, endpoint, PATH_A, MODEL_A)]})
    options = RunOptions(download_cache=tmp_path / "cache")
    assert HostSession(load_manifest(manifest), options).apply().ok
    cached = tmp_path / "cache" / "sha256" / _sha(MODEL_A)

    _flip_byte(cached, keep_mtime=False)
    Path(host.path(PATH_A)).unlink()
    events: list[dict[str, Any]] = []
    report = HostSession(load_manifest(manifest), options).apply(events.append)
    assert report.ok, report.as_json()
    assert _served(state, PATH_A) == [CONTROLLER, CONTROLLER], "re-fetched by the controller, not by the host"
    caching = [e["message"] for e in events if e.get("phase") == "caching"]
    assert len(caching) == 1 and "not the pinned" in caching[0]
    assert cached.read_bytes() == MODEL_A
    assert Path(host.path(PATH_A)).read_bytes() == MODEL_A


def test_a_wrong_pin_fails_on_the_controller_naming_the_url_and_both_hashes(
        tmp_path: Path, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    host = TargetHost("local", "local", str(tmp_path / "root"))
    spec = _download(state, endpoint, PATH_A, MODEL_A)
    spec["sha256"] = "0" * 64
    manifest = write_manifest(tmp_path, host, {"resources": [spec]})
    cache = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["apply", "--download-cache", str(cache), str(manifest)])
    assert result.exit_code == 1
    assert spec["url"] in result.output and _sha(MODEL_A) in result.output and "0" * 64 in result.output
    assert "Traceback" not in result.output
    assert [p.name for p in (cache / "sha256").iterdir() if not p.name.endswith(".lock")] == []
    assert not host.exists(PATH_A) and not host.exists(".provision/incoming")


def test_the_cache_resumes_a_dropped_download(tmp_path: Path, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    spec = _download(state, endpoint, PATH_A, MODEL_A)
    state.drop_first_response_for.add(f"{REPO}/main/a.safetensors")
    cached = DownloadCache(tmp_path / "cache").get(spec["url"], sha256=spec["sha256"], size=spec["size"])
    assert cached.fetched and cached.path.read_bytes() == MODEL_A
    assert [c.range for c in state.served(REPO, "a.safetensors")] == [None, f"bytes={len(MODEL_A) // 2}-"]
    assert sorted(p.name for p in cached.path.parent.iterdir()) == sorted(
        [spec["sha256"], f"{spec['sha256']}.json", f"{spec['sha256']}.lock"]), "no .part left behind"


def test_fifty_hosts_asking_at_once_download_the_file_once(tmp_path: Path, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    spec = _download(state, endpoint, PATH_A, MODEL_A)
    state.response_delay = 0.3  # every caller is waiting while the one download is in flight
    cache = DownloadCache(tmp_path / "cache")
    start = threading.Barrier(50, timeout=30)
    results: list[Any] = []
    lock = threading.Lock()

    def host() -> None:
        start.wait()
        try:
            cached = cache.get(spec["url"], sha256=spec["sha256"], size=spec["size"])
        except DownloadCacheError as exc:  # collected, so the assertion below shows it
            cached = exc
        with lock:
            results.append(cached)

    threads = [threading.Thread(target=host) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 50 and all(not isinstance(r, Exception) for r in results), results
    assert _served(state, PATH_A) == [CONTROLLER]
    assert sum(1 for r in results if r.fetched) == 1
    assert {r.path for r in results} == {tmp_path / "cache" / "sha256" / spec["sha256"]}


# -- the inventory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("/srv/cache", "download_cache: expected a mapping with the directory under dir:"),
    ({"path": "cache"}, "download_cache.path: unknown key 'path'"),
    ({"dir": ""}, "download_cache.dir:"),
    ({"dir": "a-file"}, "download_cache.dir: "),
])
def test_a_bad_download_cache_is_reported_with_file_and_field(tmp_path: Path, value: Any, expected: str) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "m.yaml").write_text("name: m\n")
    inventory = tmp_path / "fleet.yaml"
    inventory.write_text(yaml.safe_dump({"defaults": {"manifest": "m.yaml"},
                                         "hosts": {"gpu-01": {"connection": "local"}},
                                         "download_cache": value}, sort_keys=False))
    with pytest.raises(InventoryError) as error:
        load_inventory(inventory)
    message = str(error.value)
    assert f"{inventory}:" in message and expected in message, message

    cli_run = CliRunner().invoke(cli, ["fleet", "apply", str(inventory)])
    assert cli_run.exit_code == 1 and expected in cli_run.output and "Traceback" not in cli_run.output


def test_download_cache_paths_resolve_against_the_inventory_and_expand_home(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "m.yaml").write_text("name: m\n")
    inventory = tmp_path / "fleet.yaml"
    for value, expected in [("cache", tmp_path / "cache"), ("~/models", tmp_path / "home" / "models"),
                            ("/srv/models", Path("/srv/models"))]:
        inventory.write_text(yaml.safe_dump({"defaults": {"manifest": "m.yaml"},
                                             "hosts": {"gpu-01": {"connection": "local"}},
                                             "download_cache": {"dir": value}}))
        assert load_inventory(inventory).download_cache == expected
    inventory.write_text(yaml.safe_dump({"defaults": {"manifest": "m.yaml"}, "hosts": {"gpu-01": {}}}))
    assert load_inventory(inventory).download_cache is None, "off unless asked for"


def _flip_byte(path: Path, keep_mtime: bool) -> None:
    st = path.stat()
    with path.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 1]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        # Within one clock tick the mtime may not move: make sure it does.
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

