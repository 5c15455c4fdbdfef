"""SIGKILL of the whole `provision` process group at chosen points of an apply or a rollback; the next
apply converges.

One host root is moved back and forth between two versions of a manifest that has every long step: a
git checkout (1,200 files), a download (from the Hub stand-in), a venv, pip packages (one of 800
modules, so that pip is caught mid-install), an env file, a file and a service behind an HTTP readiness
probe, restarted by a handler. Each kill point is one move: `provision apply` (or `rollback`) runs in a
process group of its own and the group is SIGKILLed when the point comes, seen from outside (streamed
lines, files, /proc). Then one apply must converge: exit 0, a plan with no changes, the service
answering with exactly the desired state (so a restart lost with the killed run is caught), one
service process, and nothing left of the killed run: no staging folder, temp file, `.part`, pip stash
or git lock in the root, no temp files where the killed run's TMPDIR pointed.

The points and their jitter come from a seeded generator: the same kills every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.fake_hub import HubState, serve_hub
from tests.support.gitrepos import UpstreamRepo, make_upstream
from tests.support.hosts import TargetHost, write_manifest
from tests.support.kills import GroupRun, names_under, processes_running
from tests.support.runs import apply, plan
from tests.support.servers import free_port, serve_directory
from tests.support.wheels import build_wheel, write_simple_index

SEED = 20261202
VERSIONS = ("1.0.0", "2.0.0")
BULK_MODULES = 800
CHECKOUT_FILES = 1200
WEIGHTS_BYTES = 3 * 1024 * 1024 // 2
SERVICE_STARTUP_SECONDS = 0.6

SERVER = """\
import hashlib, http.server, json, os, sys, time
import provbulk, provdemo
SERVER_VERSION = "@VERSION@"
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(root, "src", "VERSION"), encoding="utf-8") as handle:
    checkout = handle.read().strip()
state = {"server": SERVER_VERSION, "greeting": os.environ.get("GREETING"), "src": checkout,
         "provdemo": provdemo.__version__, "provbulk": provbulk.__version__}
time.sleep(@STARTUP@)  # imports and set-up come before the port opens, as in ComfyUI
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(os.path.join(root, "models", "weights.bin"), "rb") as handle:  # read per request
            weights = hashlib.sha256(handle.read()).hexdigest()
        body = json.dumps(dict(state, weights=weights), sort_keys=True).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _weights(version: str) -> bytes:
    return random.Random(f"weights-{version}").randbytes(WEIGHTS_BYTES)


@pytest.fixture(scope="module")
def crash_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A package index with provdemo (needs provdep) and provbulk (800 modules) in both versions."""
    house = tmp_path_factory.mktemp("crash-wheels")
    build_wheel(house, "provdep", "1.0.0")
    for version in VERSIONS:
        build_wheel(house, "provdemo", version, requires=["provdep==1.0.0"])
        modules = {f"provbulk/m{i:04d}.py": f"VERSION = {version!r}\nVALUE = {i}\n".encode() * 8
                   for i in range(BULK_MODULES)}
        build_wheel(house, "provbulk", version, extra_files=modules,
                    module_body=f"__version__ = {version!r}\nfrom . import m{BULK_MODULES - 1:04d}\n")
    root = tmp_path_factory.mktemp("crash-index")
    write_simple_index(house, root)
    with serve_directory(root) as base:
        yield f"{base}/simple"


@pytest.fixture
def checkout_upstream(tmp_path: Path) -> UpstreamRepo:
    repo = make_upstream(tmp_path / "upstreams", "app")
    for version in VERSIONS:
        files = {f"lib/f{i:04d}.txt": f"{version} {i}\n" for i in range(CHECKOUT_FILES)}
        repo.commit({"VERSION": f"{version}\n", **files}, version, tag=f"v{version}")
    return repo


@pytest.fixture
def hub() -> Iterator[tuple[HubState, str]]:
    state = HubState()
    for version in VERSIONS:
        state.add("org/weights", f"weights-{version}.bin", _weights(version))
    with serve_hub(state) as endpoint:
        yield state, endpoint


@dataclass
class Scene:
    """The host, its two manifests and what each makes the service answer."""

    host: TargetHost
    root: Path
    port: int
    manifests: dict[str, Path]
    hub: HubState
    killed_tmp: Path

    def expected(self, version: str) -> dict[str, str]:
        return {"server": version, "greeting": f"hello {version}", "src": version, "provdemo": version,
                "provbulk": version, "weights": hashlib.sha256(_weights(version)).hexdigest()}

    def site_packages(self) -> Path:
        found = sorted((self.root / "venv" / "lib").glob("python3*/site-packages"))
        return found[0] if found else self.root / "venv" / "lib" / "missing"

    def service_pid(self) -> int | None:
        try:
            return int(json.loads((self.root / ".provision/services/app.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def servers(self) -> list[int]:
        return processes_running([str(self.root / "venv" / "bin" / "python"), "app/server.py"])

    def answer(self, timeout: float = 10.0) -> dict[str, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as response:
                    return json.loads(response.read())  # type: ignore[no-any-return]
            except OSError:
                time.sleep(0.1)
        return None

    def leftovers(self) -> list[str]:
        """What a killed run may leave that the next apply must have cleared."""
        bad = []
        for path in names_under(self.root):
            name = path.name
            if (".provision-" in name or name.endswith(".part") or name.startswith("~")
                    or (name.endswith(".lock") and ".git" in path.parts)):
                bad.append(str(path.relative_to(self.root)))
        bad += [f"$TMPDIR/{p.name}" for p in self.killed_tmp.iterdir()]
        return sorted(bad)

    def stop_services(self) -> None:
        for pid in self.servers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _manifest(tmp_path: Path, host: TargetHost, version: str, port: int, index: str, upstream: UpstreamRepo,
              endpoint: str) -> Path:
    restart = ["restart-app"]
    return write_manifest(tmp_path, host, name=f"v{version}.yaml", body={
        "resources": [
            {"kind": "file", "path": "app/server.py", "notify": restart,
             "content": SERVER.replace("@VERSION@", version).replace("@STARTUP@", str(SERVICE_STARTUP_SECONDS))},
            {"kind": "envfile", "path": "app.env", "values": {"GREETING": f"hello {version}"}, "notify": restart},
            {"kind": "git", "path": "src", "repo": upstream.url, "ref": f"v{version}", "notify": restart},
            {"kind": "venv", "path": "venv"},
            {"kind": "pip", "venv": "venv", "index_url": index, "notify": restart,
             "packages": [f"provdemo=={version}", f"provbulk=={version}"]},
            # Read by the service on each request: no restart, so a kill here finds the restart pending.
            {"kind": "download", "path": "models/weights.bin",
             "url": f"{endpoint}/org/weights/resolve/main/weights-{version}.bin",
             "sha256": hashlib.sha256(_weights(version)).hexdigest(), "size": WEIGHTS_BYTES},
            {"kind": "service", "name": "app", "manager": "process", "env_file": "app.env",
             "argv": ["venv/bin/python", "app/server.py", str(port)],
             "ready": {"port": port, "path": "/"}, "ready_timeout": 30},
        ],
        "handlers": {"restart-app": {"restart": "app"}},
    })


Moment = Callable[[GroupRun], bool]


@dataclass(frozen=True)
class KillPoint:
    name: str
    version: str  # the manifest the killed run moves the host to
    moment: Moment
    delay: float = 0.0
    command: str = "apply"  # or "rollback": back to the last generation of `version`
    prepare: Callable[[], None] | None = None
    verify: Callable[[], list[str]] | None = None  # checks of its own after the next apply
    recover_to: str | None = None  # after a rollback: the manifest applied next (default: the one before)


def _kill_points(scene: Scene, rng: random.Random) -> list[KillPoint]:
    one, two = VERSIONS
    site = scene.site_packages
    weights_part = scene.root / "models" / "weights.bin.part"

    def dist_info_cut_off(version: str) -> Moment:
        info = f"provbulk-{version}.dist-info"
        return lambda run: (site() / info / "METADATA").exists() and not (site() / info / "INSTALLER").exists()

    def service_replaced() -> Moment:
        """A service process other than the one that ran when the command started is up."""
        first: list[int | None] = []

        def moment(run: GroupRun) -> bool:
            if not first:
                first.append(scene.service_pid())
            return any(pid != first[0] for pid in scene.servers())

        return moment

    def resumed() -> list[str]:
        ranges = [c.range for c in scene.hub.served("org/weights", f"weights-{two}.bin")]
        resumed_at = [int(r[6:].split("-")[0]) for r in ranges if r and r.startswith("bytes=")]
        return [] if any(resumed_at) else [f"the download was not resumed (requests' Range: {ranges})"]

    def throttle_download() -> None:
        scene.hub.bytes_per_second = 2 * 1024 * 1024

    def remove_venv() -> None:
        import shutil

        shutil.rmtree(scene.root / "venv")

    part_bytes = rng.randrange(WEIGHTS_BYTES // 8, WEIGHTS_BYTES * 3 // 4)
    return [
        KillPoint("git clone running (fresh root)", one,
                  lambda run: any(m.runs("clone") for m in run.members()), rng.uniform(0, 0.1)),
        KillPoint("env file written, restart handler still pending", two,
                  lambda run: f"hello {two}" in _read(scene.root / "app.env")),
        KillPoint("git checkout holding .git/index.lock", one,
                  lambda run: (scene.root / "src" / ".git" / "index.lock").exists()),
        KillPoint("pip upgrade: old version stashed by pip, new one half extracted", two,
                  lambda run: any(p.name.startswith("~") for p in _listing(site())), rng.uniform(0, 0.15)),
        KillPoint("pip: new metadata extracted, pip still compiling (no INSTALLER yet)", one,
                  dist_info_cut_off(one)),
        KillPoint(f"download at {part_bytes} bytes of .part, restart handler pending", two,
                  lambda run: weights_part.exists() and weights_part.stat().st_size >= part_bytes,
                  prepare=throttle_download, verify=resumed),
        KillPoint("restart handler announced (service being stopped)", one,
                  lambda run: run.said("handler:restart-app"), rng.uniform(0, 0.05)),
        KillPoint("service started, waiting for readiness", two, service_replaced()),
        KillPoint("pip install child running", one,
                  lambda run: any(m.runs("-m", "pip", "install") for m in run.members()), rng.uniform(0.05, 0.5)),
        KillPoint("venv creation: ensurepip running", two,
                  lambda run: any(m.runs("ensurepip") for m in run.members()), rng.uniform(0.2, 1.5),
                  prepare=remove_venv),
        KillPoint("rollback: pip install child running", one,
                  lambda run: any(m.runs("-m", "pip", "install") for m in run.members()), rng.uniform(0.05, 0.4),
                  command="rollback"),
        KillPoint("rollback: service restarted by its handler, not ready yet", one, service_replaced(),
                  rng.uniform(0, 0.3), command="rollback", recover_to=one),
        KillPoint("seeded random moment", two, _after(rng.uniform(1.2, 2.5))),
        KillPoint("seeded random moment", one, _after(rng.uniform(1.2, 2.5))),
        KillPoint("new generation written, result not yet sent", two, _new_generation(scene.root)),
    ]


def _after(seconds: float) -> Moment:
    return lambda run: run.elapsed >= seconds


def _new_generation(root: Path) -> Moment:
    """A generation file that was not there when the command started."""
    folder = root / ".provision" / "generations"
    before: list[set[str]] = []

    def moment(run: GroupRun) -> bool:
        if not before:
            before.append({p.name for p in _listing(folder)})
        return any(p.name not in before[0] and p.suffix == ".json" for p in _listing(folder))

    return moment


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


@dataclass
class Outcome:
    point: str
    killed_after: float
    converged: bool
    problems: list[str]


def test_sigkill_at_chosen_points_then_the_next_apply_converges(
        tmp_path: Path, crash_index: str, checkout_upstream: UpstreamRepo, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    root = tmp_path / "root"
    host = TargetHost("local", "local", str(root))
    port = free_port()
    killed_tmp = tmp_path / "killed-tmp"
    killed_tmp.mkdir()
    manifests = {v: _manifest(tmp_path, host, v, port, crash_index, checkout_upstream, endpoint) for v in VERSIONS}
    scene = Scene(host, root, port, manifests, state, killed_tmp)
    generations: dict[str, int] = {}
    outcomes: list[Outcome] = []
    rng = random.Random(SEED)
    try:
        current = None
        for point in _kill_points(scene, rng):
            if point.prepare:
                point.prepare()
            if point.command == "rollback":
                args = ["rollback", "--to", str(generations[point.version]), str(manifests[current or point.version])]
            else:
                args = ["apply", str(manifests[point.version])]
            run = GroupRun(args, env={"TMPDIR": str(killed_tmp)})
            killed = run.kill_when(point.moment, point.name, point.delay)
            state.bytes_per_second = 0
            target = point.version if point.command == "apply" else point.recover_to or current
            assert target is not None
            problems = _recover(scene, target, generations)
            problems += point.verify() if point.verify else []
            outcomes.append(Outcome(point.name, killed.seconds, not problems, problems))
            print(f"{'ok  ' if not problems else 'FAIL'} {point.name}: killed at {killed.seconds:.3f} s", problems)
            if problems:
                _reset(scene, target, generations)
            current = target
    finally:
        scene.stop_services()
    report = "\n".join(f"{'ok  ' if o.converged else 'FAIL'} killed at {o.killed_after:6.3f} s: {o.point}"
                       + "".join(f"\n       {p}" for p in o.problems) for o in outcomes)
    print(f"\n{sum(o.converged for o in outcomes)}/{len(outcomes)} kills converged on the next apply\n{report}")
    assert all(o.converged for o in outcomes), report


def _recover(scene: Scene, version: str, generations: dict[str, int]) -> list[str]:
    """The next apply after the kill; what is not as it must be."""
    manifest = scene.manifests[version]
    problems: list[str] = []
    try:
        report = apply(manifest)
    except Exception as exc:  # an agent error is a result here: it is what did not converge
        return [f"apply raised {type(exc).__name__}: {exc}"]
    if not report.ok:
        problems.append(f"next apply exit {report.exit_code()}: {report.failures}")
    elif report.generation is not None:
        generations[version] = report.generation
    try:
        pending = plan(manifest)
        if pending.exit_code() != 0:
            rows = [(r["id"], r.get("error") or [c["reason"] for c in r["changes"]]) for r in pending.pending]
            problems.append(f"plan after it exit {pending.exit_code()}: {rows}")
    except Exception as exc:
        problems.append(f"plan raised {type(exc).__name__}: {exc}")
    answer = scene.answer()
    if answer != scene.expected(version):
        problems.append(f"service answers {answer}, want {scene.expected(version)}")
    servers = scene.servers()
    if len(servers) != 1:
        problems.append(f"{len(servers)} service processes run: {servers}")
    problems += [f"left over: {name}" for name in scene.leftovers()]
    return problems


def _reset(scene: Scene, version: str, generations: dict[str, int]) -> None:
    """After a point that did not converge: a clean root at `version`, so the next point is measured alone."""
    import shutil

    scene.stop_services()
    shutil.rmtree(scene.root, ignore_errors=True)
    for leftover in scene.killed_tmp.iterdir():
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
    generations.clear()
    for each in sorted(VERSIONS, key=lambda v: v == version):  # `version` last: the host ends there
        report = apply(scene.manifests[each])
        assert report.ok, report.failures
        assert report.generation is not None
        generations[each] = report.generation
