"""SIGKILL of the whole `provision` process group at chosen points of an apply or a rollback; the next
apply converges.

One host root holds a manifest with every long step: a git checkout (600 files), a download (from the
Hub stand-in), a venv, pip packages (one of 300 modules, so that pip is caught mid-install), an env
file, a file and a service behind an HTTP readiness probe, restarted by a handler. Each kill point
moves some of these parts to their other version: `provision apply` (or `rollback`) runs in a process
group of its own, and the group is SIGKILLed when the point comes, seen from outside (streamed lines,
files, /proc). Then one apply must converge: exit 0, a plan with no changes, the service answering
with exactly the desired state of every part (so a restart lost with the killed run is caught; before
that apply, plan shows the restart as owed), one service process, and nothing left of the killed run:
no staging folder, temp file, `.part`, pip stash or git lock in the root, and no temp files where the
killed run's TMPDIR pointed.

The points and their jitter come from a seeded generator: the same kills every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
BULK_MODULES = 300
CHECKOUT_FILES = 600
WEIGHTS_BYTES = 3 * 1024 * 1024 // 2
SERVICE_STARTUP_SECONDS = 0.3

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
    """A package index with provdemo (needs provdep) and provbulk (300 modules) in both versions."""
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


PARTS = ("file", "env", "git", "pip", "download")
Want = dict[str, str]  # part -> the version of it the manifest asks for


def _flip(want: Want, *parts: str) -> Want:
    other = {VERSIONS[0]: VERSIONS[1], VERSIONS[1]: VERSIONS[0]}
    return {part: other[v] if part in parts else v for part, v in want.items()}


@dataclass
class Scene:
    """The host, the manifests written for it, and what each makes the service answer."""

    tmp_path: Path
    host: TargetHost
    root: Path
    port: int
    index: str
    upstream: UpstreamRepo
    endpoint: str
    hub: HubState
    killed_tmp: Path
    written: int = 0
    target: Want = field(default_factory=dict)  # what the run under way asks for

    def manifest(self, want: Want) -> Path:
        self.written += 1
        restart = ["restart-app"]
        server = SERVER.replace("@VERSION@", want["file"]).replace("@STARTUP@", str(SERVICE_STARTUP_SECONDS))
        weights = want["download"]
        return write_manifest(self.tmp_path, self.host, name=f"m{self.written:02d}.yaml", body={
            "resources": [
                {"kind": "file", "path": "app/server.py", "content": server, "notify": restart},
                {"kind": "envfile", "path": "app.env", "values": {"GREETING": f"hello {want['env']}"},
                 "notify": restart},
                {"kind": "git", "path": "src", "repo": self.upstream.url, "ref": f"v{want['git']}", "notify": restart},
                {"kind": "venv", "path": "venv"},
                {"kind": "pip", "venv": "venv", "index_url": self.index, "notify": restart,
                 "packages": [f"provdemo=={want['pip']}", f"provbulk=={want['pip']}"]},
                # Read by the service on each request: no restart, so a kill here finds the restart pending.
                {"kind": "download", "path": "models/weights.bin",
                 "url": f"{self.endpoint}/org/weights/resolve/main/weights-{weights}.bin",
                 "sha256": hashlib.sha256(_weights(weights)).hexdigest(), "size": WEIGHTS_BYTES},
                {"kind": "service", "name": "app", "manager": "process", "env_file": "app.env",
                 "argv": ["venv/bin/python", "app/server.py", str(self.port)],
                 "ready": {"port": self.port, "path": "/"}, "ready_timeout": 30},
            ],
            "handlers": {"restart-app": {"restart": "app"}},
        })

    @staticmethod
    def expected(want: Want) -> dict[str, str]:
        return {"server": want["file"], "greeting": f"hello {want['env']}", "src": want["git"],
                "provdemo": want["pip"], "provbulk": want["pip"],
                "weights": hashlib.sha256(_weights(want["download"])).hexdigest()}

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


Moment = Callable[[GroupRun], bool]


@dataclass(frozen=True)
class KillPoint:
    name: str
    flip: tuple[str, ...]  # the parts the killed run moves to their other version
    moment: Moment
    delay: float = 0.0
    rollback: bool = False  # the killed run rolls back to the last generation that differs in `flip`
    recover_to_rollback: bool = False  # then the next apply asks for that generation's state
    prepare: Callable[[], None] | None = None
    verify: Callable[[], list[str]] | None = None  # checks of its own after the next apply
    restart_owed: bool = False  # the kill came after a change that notified the restart, before the restart


#: PROVISION_CRASH_RANDOM_KILLS=6 adds that many seeded random moments by hand (20 kills in all); CI keeps 14.
EXTRA_RANDOM_KILLS = int(os.environ.get("PROVISION_CRASH_RANDOM_KILLS", "0"))


def _kill_points(scene: Scene, rng: random.Random) -> list[KillPoint]:
    site = scene.site_packages
    weights_part = scene.root / "models" / "weights.bin.part"

    def dist_info_cut_off(run: GroupRun) -> bool:
        return any((info / "METADATA").exists() and not (info / "INSTALLER").exists()
                   for info in site().glob("provbulk-*.dist-info"))

    def service_replaced() -> Moment:
        """A service process other than the one that ran when the command started is up."""
        first: list[int | None] = []

        def moment(run: GroupRun) -> bool:
            if not first:
                first.append(scene.service_pid())
            return any(pid != first[0] for pid in scene.servers())

        return moment

    def file_written(run: GroupRun) -> bool:
        return f'SERVER_VERSION = "{scene.target["file"]}"' in _read(scene.root / "app" / "server.py")

    def throttle_download() -> None:
        scene.hub.bytes_per_second = 2 * 1024 * 1024

    def remove_checkout() -> None:
        shutil.rmtree(scene.root / "src")

    def resumed() -> list[str]:
        ranges = [c.range for c in scene.hub.calls if "/org/weights/" in c.path]
        offsets = [int(r[6:].split("-")[0]) for r in ranges if r and r.startswith("bytes=")]
        return [] if any(offsets) else [f"the download was not resumed (requests' Range: {ranges})"]

    def any_pip_child(run: GroupRun) -> bool:
        return any(m.runs("-m", "pip", "install") for m in run.members())

    part_bytes = rng.randrange(WEIGHTS_BYTES // 8, WEIGHTS_BYTES * 3 // 4)
    return [
        KillPoint("venv creation: ensurepip running (fresh root)", PARTS,
                  lambda run: any(m.runs("ensurepip") for m in run.members()), rng.uniform(0.2, 1.5)),
        KillPoint(f"download at {part_bytes} bytes of .part, restart handler pending", ("env", "download"),
                  lambda run: weights_part.exists() and weights_part.stat().st_size >= part_bytes,
                  prepare=throttle_download, verify=resumed, restart_owed=True),
        KillPoint("git checkout holding .git/index.lock, files half written", ("git",),
                  lambda run: (scene.root / "src" / ".git" / "index.lock").exists(), rng.uniform(0.005, 0.03)),
        KillPoint("git clone running", ("git",), lambda run: any(m.runs("clone") for m in run.members()),
                  rng.uniform(0, 0.1), prepare=remove_checkout),
        KillPoint("pip upgrade: old version in pip's stash, new one half extracted", ("pip",),
                  lambda run: any(p.name.startswith("~") for p in _listing(site())), rng.uniform(0, 0.1)),
        KillPoint("pip: new metadata extracted, pip still compiling (no INSTALLER yet)", ("pip",),
                  dist_info_cut_off),
        KillPoint("file written, restart handler pending", ("file",), file_written, restart_owed=True),
        KillPoint("restart handler announced (service being stopped)", ("env",),
                  lambda run: run.said("handler:restart-app"), rng.uniform(0, 0.05)),
        KillPoint("service started, waiting for readiness", ("env",), service_replaced()),
        KillPoint("rollback: pip install child running", ("pip",), any_pip_child, rng.uniform(0.05, 0.3),
                  rollback=True),
        KillPoint("rollback: service restarted by its handler, not ready yet", ("env",), service_replaced(),
                  rng.uniform(0, 0.2), rollback=True, recover_to_rollback=True),
        KillPoint("seeded random moment", PARTS, _after(rng.uniform(1.2, 2.5))),
        KillPoint("seeded random moment", ("git", "pip"), _after(rng.uniform(1.2, 2.5))),
        KillPoint("new generation written, result not yet sent", ("env",), _new_generation(scene.root)),
    ] + [KillPoint("seeded random moment", PARTS, _after(rng.uniform(0.3, 3.0))) for _ in range(EXTRA_RANDOM_KILLS)]


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
    recovered_in: float
    converged: bool
    problems: list[str]


# ~128 s under the suite's load (4 workers on 2 cores), too near pytest's default 300 s limit.
@pytest.mark.timeout(900)
def test_sigkill_at_chosen_points_then_the_next_apply_converges(
        tmp_path: Path, crash_index: str, checkout_upstream: UpstreamRepo, hub: tuple[HubState, str]) -> None:
    state, endpoint = hub
    root = tmp_path / "root"
    killed_tmp = tmp_path / "killed-tmp"
    killed_tmp.mkdir()
    scene = Scene(tmp_path, TargetHost("local", "local", str(root)), root, free_port(), crash_index,
                  checkout_upstream, endpoint, state, killed_tmp)
    generations: dict[int, Want] = {}
    outcomes: list[Outcome] = []
    rng = random.Random(SEED)
    current: Want = dict.fromkeys(PARTS, VERSIONS[1])
    try:
        for point in _kill_points(scene, rng):
            if point.prepare:
                point.prepare()
            if point.rollback:
                # The newest generation that differs in the parts named, and in as few others as can be.
                number, back_to = min(((n, w) for n, w in generations.items()
                                       if all(w[p] != current[p] for p in point.flip)),
                                      key=lambda g: (sum(g[1][p] != current[p] for p in PARTS), -g[0]))
                args = ["rollback", "--to", str(number), str(scene.manifest(current))]
                target = dict(back_to, download=current["download"]) if point.recover_to_rollback else current
            else:
                target = _flip(current, *point.flip)
                args = ["apply", str(scene.manifest(target))]
            scene.target = target
            run = GroupRun(args, env={"TMPDIR": str(killed_tmp)})
            killed = run.kill_when(point.moment, point.name, point.delay)
            state.bytes_per_second = 0
            recovery_started = time.monotonic()
            problems = _owed(scene, target) if point.restart_owed else []
            problems += _recover(scene, target, generations)
            problems += point.verify() if point.verify else []
            outcomes.append(Outcome(point.name, killed.seconds, round(time.monotonic() - recovery_started, 2),
                                    not problems, problems))
            if problems:
                _reset(scene, target, generations)
            current = target
    finally:
        scene.stop_services()
    report = "\n".join(f"{'ok  ' if o.converged else 'FAIL'} killed at {o.killed_after:6.3f} s, next apply and "
                       f"checks {o.recovered_in:5.2f} s: {o.point}"
                       + "".join(f"\n       {p}" for p in o.problems) for o in outcomes)
    print(f"\n{sum(o.converged for o in outcomes)}/{len(outcomes)} kills converged on the next apply\n{report}")
    assert all(o.converged for o in outcomes), report


def _owed(scene: Scene, want: Want) -> list[str]:
    """Before the next apply: plan shows the restart the killed run owes (it must not say "no changes")."""
    report = plan(scene.manifest(want))
    rows = [r["id"] for r in report.pending]
    return [] if "handler:restart-app" in rows and report.exit_code() == 2 else [
        f"plan after the kill shows no owed restart (exit {report.exit_code()}, pending {rows})"]


def _recover(scene: Scene, want: Want, generations: dict[int, Want]) -> list[str]:
    """The next apply after the kill; what is not as it must be."""
    manifest = scene.manifest(want)
    problems: list[str] = []
    try:
        report = apply(manifest)
    except Exception as exc:  # an agent error is a result here: it is what did not converge
        return [f"apply raised {type(exc).__name__}: {exc}"]
    if not report.ok:
        problems.append(f"next apply exit {report.exit_code()}: {report.failures}")
    elif report.generation is not None:
        generations[report.generation] = want
    try:
        pending = plan(manifest)
        if pending.exit_code() != 0:
            rows = [(r["id"], r.get("error") or [c["reason"] for c in r["changes"]]) for r in pending.pending]
            problems.append(f"plan after it exit {pending.exit_code()}: {rows}")
    except Exception as exc:
        problems.append(f"plan raised {type(exc).__name__}: {exc}")
    answer = scene.answer()
    if answer != scene.expected(want):
        problems.append(f"service answers {answer}, want {scene.expected(want)}")
    servers = scene.servers()
    if len(servers) != 1:
        problems.append(f"{len(servers)} service processes run: {servers}")
    problems += [f"left over: {name}" for name in scene.leftovers()]
    return problems


def _reset(scene: Scene, want: Want, generations: dict[int, Want]) -> None:
    """After a point that did not converge: a clean root at `want`, so the next point is measured alone."""
    scene.stop_services()
    shutil.rmtree(scene.root, ignore_errors=True)
    for leftover in scene.killed_tmp.iterdir():
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
    generations.clear()
    for each in (_flip(want, *PARTS), want):  # two generations to roll back between; `want` last
        report = apply(scene.manifest(each))
        assert report.ok, report.failures
        assert report.generation is not None
        generations[report.generation] = each
