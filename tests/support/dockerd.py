"""A real Docker daemon for the suite: reuse a running one or start our own, plus a small base image.

The daemon runs without a bridge or iptables rules (loopback only, and it works inside a VM or a
container) on vfs storage. Test containers use the host network and see the pytest base temp dir at
the same path, so file:// URLs and 127.0.0.1 servers made by the tests work unchanged inside them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.hosts import TargetHost
from tests.support.kills import process_state

# procps: `kill` and `ps` as programs (minbase has them only as shell builtins), which tests exec.
BASE_PACKAGES = "python3,python3-venv,git,ca-certificates,procps"
# The tag names its package list, so changing the list builds a new image instead of reusing a stale one.
BASE_IMAGE = f"provision-test-base:bookworm-{hashlib.sha256(BASE_PACKAGES.encode()).hexdigest()[:8]}"
TEST_LABEL = "provision.test"
# Serializes daemon start and image build between concurrent pytest processes on one machine.
LOCK_FILE = Path(tempfile.gettempdir()) / "provision-test-docker.lock"
# The daemon a test session started, and the pytest processes (xdist workers, a second run) using it:
# the last one out stops the daemon, so no worker loses it while another's containers still run.
SHARED_DIR = Path(tempfile.gettempdir()) / "provision-test-dockerd"
# Tests that build images count the build containers left behind; another worker's build in flight would
# look like a leftover of theirs, so they take turns (across xdist workers and pytest runs).
IMAGE_BUILD_LOCK = Path(tempfile.gettempdir()) / "provision-test-image-builds.lock"
SOCKET_WAIT_S = 60.0
DEBOOTSTRAP_TIMEOUT_S = 900.0


@dataclass
class DockerSession:
    """What the suite set up once: the daemon (ours or not), the base image, the mount to share."""

    base_temp: Path
    registered: bool = False
    failure: str | None = None
    containers: list[str] = field(default_factory=list)
    # `docker run`s still in flight, by container name. vfs copies the whole image twice per container
    # (seconds each), so the next test's container is started while the current test runs.
    launching: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    spare: str | None = None
    removing: list[subprocess.Popen[bytes]] = field(default_factory=list)


_KEY = pytest.StashKey[DockerSession]()


def docker(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check)


def daemon_answers(timeout: float = 20.0) -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=timeout, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextmanager
def _machine_lock(path: Path = LOCK_FILE) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_dockerd(log_dir: Path) -> int:
    """Start dockerd (as root) and wait, bounded, until it answers; returns its PID."""
    log = log_dir / "dockerd.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false", "--storage-driver=vfs"],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    deadline = time.monotonic() + SOCKET_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}:\n{_tail(log)}")
        if daemon_answers(timeout=5.0):
            return proc.pid
        time.sleep(0.5)
    stop_dockerd(proc.pid)
    raise RuntimeError(f"dockerd did not answer within {SOCKET_WAIT_S:g}s:\n{_tail(log)}")


def stop_dockerd(pid: int) -> None:
    """SIGTERM, then SIGKILL after a bounded wait; dockerd takes its containerd down with it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped = pid if not _alive(pid) else 0
        if reaped:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, not a zombie: a daemon whose starter exited is reaped by whoever adopted it, maybe late."""
    return process_state(pid) not in (None, "Z")


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def ensure_base_image(work_dir: Path) -> None:
    """Build BASE_IMAGE with debootstrap once per machine; later sessions reuse it by tag."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install -y debootstrap)")
    rootfs = work_dir / "rootfs"
    log = work_dir / "debootstrap.log"
    with log.open("wb") as sink:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs)],
            stdout=sink, stderr=subprocess.STDOUT, timeout=DEBOOTSTRAP_TIMEOUT_S, check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"debootstrap failed (is the Debian mirror reachable?):\n{_tail(log)}")
    # vfs copies the whole image for every container: drop what a test never reads (~45% of it).
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                 "usr/share/locale"):
        for entry in (rootfs / junk).glob("*"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True,
                              text=True, timeout=600, check=False)
    assert tar.stdout is not None
    tar.stdout.close()
    tar.wait(timeout=60)
    shutil.rmtree(rootfs, ignore_errors=True)
    if imported.returncode != 0:
        raise RuntimeError(f"docker import failed: {imported.stderr}")


def docker_session(config: pytest.Config, base_temp: Path) -> DockerSession:
    """Set up the daemon and base image once per pytest session; fail every later caller the same way."""
    session = config.stash.get(_KEY, None)
    if session is None:
        session = DockerSession(base_temp=base_temp)
        config.stash[_KEY] = session
        config.add_cleanup(lambda: _end_session(session))
        _prepare(session, base_temp)
    if session.failure:
        if session.failure.startswith("skip:"):
            pytest.skip(session.failure.removeprefix("skip:"))
        pytest.fail(session.failure, pytrace=False)
    return session


def _prepare(session: DockerSession, base_temp: Path) -> None:
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        session.failure = "skip:Docker is not installed (apt-get install -y docker.io debootstrap)"
        return
    work_dir = base_temp / "docker-setup"
    work_dir.mkdir(exist_ok=True)
    try:
        with _machine_lock():
            if not daemon_answers():
                if os.geteuid() != 0:
                    session.failure = "skip:no Docker daemon answers and starting one needs root"
                    return
                SHARED_DIR.mkdir(exist_ok=True)
                (SHARED_DIR / "dockerd.pid").write_text(f"{start_dockerd(work_dir)}\n")
            _register_user(os.getpid())
            session.registered = True
            ensure_base_image(work_dir)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        session.failure = f"Docker test setup failed: {exc}"


def _register_user(pid: int) -> None:
    users = SHARED_DIR / "users"
    users.mkdir(parents=True, exist_ok=True)
    (users / str(pid)).touch()


def _others_remain(leaving: int) -> bool:
    """Whether another registered pytest process is still alive; dead ones (killed runs) are dropped."""
    users = SHARED_DIR / "users"
    (users / str(leaving)).unlink(missing_ok=True)
    alive = False
    for entry in users.glob("*"):
        if entry.name.isdigit() and _alive(int(entry.name)):
            alive = True
        else:
            entry.unlink(missing_ok=True)
    return alive


def _release_daemon() -> None:
    """Leave the shared daemon; the last user stops it if a test session started it."""
    with _machine_lock():
        if _others_remain(os.getpid()):
            return
        pid_file = SHARED_DIR / "dockerd.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        pid_file.unlink()
        # A file left by a killed run may name a PID reused since: stop only a dockerd.
        if _command_name(pid) == "dockerd":
            stop_dockerd(pid)


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _end_session(session: DockerSession) -> None:
    session.spare = None
    for name in list(session.containers):
        remove_container(session, name)
    for proc in session.removing:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if session.registered:
        _release_daemon()


def start_container(session: DockerSession, image: str = BASE_IMAGE, network: str = "host") -> str:
    """A fresh container that sleeps until removed; the pytest base temp is mounted at the same path."""
    name = _launch(session, image, network)
    _wait_started(session.launching.pop(name))
    return name


def _launch(session: DockerSession, image: str, network: str) -> str:
    name = f"provision-test-{uuid.uuid4().hex[:10]}"
    mount = str(session.base_temp)
    # --init: a PID 1 that reaps orphans, or a killed service would linger as a zombie that still
    # answers `kill -0`.
    session.launching[name] = subprocess.Popen(
        ["docker", "run", "-d", "--init", "--name", name, "--network", network, "--label", f"{TEST_LABEL}=true",
         "-v", f"{mount}:{mount}", image, "sleep", "infinity"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    session.containers.append(name)
    return name


def _wait_started(proc: subprocess.Popen[str]) -> None:
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError("docker run did not finish within 180s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"docker run failed: {stderr.strip()}")


def _take_test_container(session: DockerSession) -> str:
    """The spare started for this test (or a new one), and start the spare for the next test."""
    name = session.spare or _launch(session, BASE_IMAGE, "host")
    _wait_started(session.launching.pop(name))
    session.spare = _launch(session, BASE_IMAGE, "host")
    return name


def remove_container(session: DockerSession, name: str) -> None:
    """Remove in the background (vfs deletes two full copies of the image); the session end waits."""
    proc = session.launching.pop(name, None)
    if proc is not None:
        proc.communicate(timeout=180)
    session.removing.append(subprocess.Popen(["docker", "rm", "-f", name], stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
    if name in session.containers:
        session.containers.remove(name)


@contextmanager
def image_build_turn() -> Iterator[None]:
    """Hold the machine's one turn to build images (see IMAGE_BUILD_LOCK)."""
    with _machine_lock(IMAGE_BUILD_LOCK):
        yield


def docker_target_host(request: pytest.FixtureRequest, tmp_path: Path) -> TargetHost:
    """A fresh container per test, reached as docker://NAME, removed when the test ends."""
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    session = docker_session(request.config, factory.getbasetemp())
    name = _take_test_container(session)
    request.addfinalizer(lambda: remove_container(session, name))
    return TargetHost("docker", f"docker://{name}", str(tmp_path / "root"),
                      exec_prefix=["docker", "exec", "-i", name])
