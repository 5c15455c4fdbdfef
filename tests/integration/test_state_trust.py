"""A root nobody can turn against the agent: planted links and hard links, a state folder that is a link or
someone else's, a forged service record, forged generation files. Real links, a real unrelated process,
real files written by hand as an attacker would."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provisioner.engine import HostSession, RunOptions
from provisioner.errors import AgentError, ProvisionError
from provisioner.manifest import load_manifest
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, plan


def _snapshot(directory: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Everything under `directory` (not following links): mode, link count and content of each entry."""
    found: dict[str, tuple[int, int, bytes | None]] = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        found[str(path.relative_to(directory))] = (st.st_mode, st.st_uid, content)
    return found


@dataclass
class Plant:
    """A trap planted in the root before an apply, and the resource the apply is asked to manage there."""

    name: str
    plant: Callable[[Path, Path], None]
    resource: dict[str, Any]


def _symlink(link: str, target: str) -> Callable[[Path, Path], None]:
    def plant(root: Path, outside: Path) -> None:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(outside / target)
    return plant


def _hardlink(link: str, target: str) -> Callable[[Path, Path], None]:
    def plant(root: Path, outside: Path) -> None:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        os.link(outside / target, root / link)
    return plant


def _state_link(link: str, target: str) -> Callable[[Path, Path], None]:
    """A link inside .provision (the rest of the folder real)."""
    def plant(root: Path, outside: Path) -> None:
        (root / ".provision" / link).parent.mkdir(parents=True, exist_ok=True)
        (root / ".provision" / link).symlink_to(outside / target)
    return plant


FILE = {"kind": "file", "content": "planted\n", "mode": "0600"}
PLANTS = [
    Plant("file link to a file outside", _symlink("conf.txt", "victim.txt"), {**FILE, "path": "conf.txt"}),
    Plant("dangling file link", _symlink("new.txt", "not-yet.txt"), {**FILE, "path": "new.txt"}),
    Plant("directory link", _symlink("data", "dir"), {**FILE, "path": "data/f.txt"}),
    Plant("link in an intermediate directory", _symlink("a/b", "dir"), {**FILE, "path": "a/b/c/f.txt"}),
    Plant("directory resource on a directory link", _symlink("models", "dir"),
          {"kind": "directory", "path": "models", "mode": "0700"}),
    # Same content: only the mode differs, so the old code chmod-ed the shared inode.
    Plant("hard link, mode change only", _hardlink("same.txt", "victim.txt"),
          {"kind": "file", "path": "same.txt", "content": "VICTIM\n", "mode": "0600"}),
    Plant("hard link, new content", _hardlink("hl.txt", "victim.txt"), {**FILE, "path": "hl.txt"}),
    Plant("hard-linked env file", _hardlink("app.env", "victim.txt"),
          {"kind": "envfile", "path": "app.env", "values": {"A": "1"}, "mode": "0600"}),
    # A resumed download appends to its .part file: a link there used to lead the bytes anywhere.
    Plant("download's partial file is a link", _symlink("models/m.bin.part", "victim.txt"),
          {"kind": "download", "path": "models/m.bin", "url": "file://@OUTSIDE@/source.bin"}),
    # A clone goes to a staging folder first: a link planted there used to take the checkout out of the root.
    Plant("git staging folder is a link", _symlink("src.provision-tmp", "empty"),
          {"kind": "git", "path": "src", "repo": "file://@OUTSIDE@/repo.git", "ref": "v1"}),
    Plant(".provision is a link", _symlink(".provision", "dir"), {**FILE, "path": "ok.txt"}),
    Plant(".provision/generations is a link", _state_link("generations", "dir"), {**FILE, "path": "ok.txt"}),
    Plant("a generation file is a link", _state_link("generations/000001.json", "victim.txt"),
          {**FILE, "path": "ok.txt"}),
]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Files outside the root that a planted link points at."""
    directory = tmp_path / "outside"
    (directory / "dir").mkdir(parents=True)
    (directory / "victim.txt").write_text("VICTIM\n")
    (directory / "victim.txt").chmod(0o644)
    (directory / "dir" / "keep.txt").write_text("keep\n")
    (directory / "source.bin").write_bytes(b"downloaded bytes\n" * 64)
    (directory / "empty").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(work)]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "README").write_text("upstream\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(directory / "repo.git")], check=True)
    return directory


def test_planted_links_never_let_a_write_chmod_or_chown_escape_the_root(tmp_path: Path, outside: Path) -> None:
    escapes: list[str] = []
    unclear: list[str] = []  # neither refused with the path nor applied to a file of the root's own
    for number, trap in enumerate(PLANTS):
        root = tmp_path / f"root{number}"
        root.mkdir()
        trap.plant(root, outside)
        before = _snapshot(outside)
        host = TargetHost("local", "local", str(root))
        resource = json.loads(json.dumps(trap.resource).replace("@OUTSIDE@", str(outside)))
        manifest = write_manifest(tmp_path, host, {"resources": [resource]}, name=f"m{number}.yaml")
        try:
            plan(manifest)
            report = apply(manifest)
        except AgentError as exc:  # the state folder is refused before any resource is looked at
            if str(root / ".provision") not in str(exc) or "symbolic link" not in str(exc):
                unclear.append(f"{trap.name}: {exc}")
        else:
            row = report.resources[0]
            managed = root / trap.resource["path"]
            if row["outcome"] == "failed":
                if str(root) not in row["error"] and "symbolic link" not in row["error"]:
                    unclear.append(f"{trap.name}: {row['error']}")
            elif managed.is_symlink() or (managed.is_file() and managed.lstat().st_nlink != 1):
                unclear.append(f"{trap.name}: applied through the link")
        if _snapshot(outside) != before:
            escapes.append(trap.name)
    print(f"{len(PLANTS)} planted links and hard links: {len(escapes)} escapes {escapes}")
    assert escapes == [] and unclear == []


def test_a_state_folder_of_another_user_is_refused_with_the_fix(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder to another user")
    root = tmp_path / "root"
    (root / ".provision" / "generations").mkdir(parents=True)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(root / ".provision" / "generations", nobody, -1)
    manifest = write_manifest(tmp_path, TargetHost("local", "local", str(root)),
                              {"resources": [{**FILE, "path": "x.txt"}]})
    with pytest.raises(AgentError) as caught:
        apply(manifest)
    message = str(caught.value)
    assert f"{root}/.provision/generations is owned by nobody" in message
    assert f"chown -R 0 {root}/.provision/generations" in message
    assert not (root / "x.txt").exists() or list((root / ".provision" / "generations").iterdir()) == []


@pytest.fixture
def unrelated() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Real processes the provisioner has nothing to do with (each in its own session: a killpg of one
    cannot reach the tests)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        processes.append(subprocess.Popen(["sleep", "300"], start_new_session=True))
        return processes[-1]

    yield start
    for process in processes:
        process.kill()
        process.wait(timeout=10)


def _service_manifest(tmp_path: Path, root: Path, state: str = "running") -> Path:
    return write_manifest(tmp_path, TargetHost("local", "local", str(root)), {"resources": [
        {"kind": "service", "name": "app", "manager": "process", "state": state,
         "argv": ["sleep", "299"], "settle_seconds": 0.3},
    ]}, name=f"service-{state}.yaml")


def _forge_record(root: Path, record: dict[str, Any]) -> None:
    (root / ".provision" / "services").mkdir(parents=True, exist_ok=True)
    (root / ".provision" / "services" / "app.json").write_text(json.dumps(record))


def _start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _forgeries(victim: subprocess.Popen[bytes]) -> dict[str, dict[str, Any]]:
    ticks = _start_ticks(victim.pid)
    return {
        # What the old check accepted: the argv tail matches the process's command line.
        "argv of the process": {"pid": victim.pid, "argv": ["/bin/sleep", "300"]},
        "wrong start time": {"pid": victim.pid, "argv": ["sleep", "300"], "cmdline": ["sleep", "300"],
                             "start_ticks": ticks + 1},
        "wrong command line": {"pid": victim.pid, "argv": ["sleep", "300"], "cmdline": ["sleep", "301"],
                               "start_ticks": ticks},
    }


def test_a_forged_service_record_never_signals_an_unrelated_process(
        tmp_path: Path, unrelated: Callable[[], subprocess.Popen[bytes]]) -> None:
    signalled = []
    started: list[int] = []
    tried = 0
    try:
        for number, name in enumerate(_forgeries(unrelated())):
            for state in ("running", "stopped"):
                victim = unrelated()  # a fresh one each time, so every forgery is counted on its own
                root = tmp_path / f"root{number}{state}"
                _forge_record(root, _forgeries(victim)[name])
                report = apply(_service_manifest(tmp_path, root, state))
                tried += 1
                record = root / ".provision/services/app.json"
                if record.exists() and json.loads(record.read_text())["pid"] != victim.pid:
                    started.append(json.loads(record.read_text())["pid"])  # ours: stopped at the end
                time.sleep(0.1)
                if victim.poll() is not None:
                    signalled.append(f"{name} ({state})")
                    continue
                assert report.ok, report.as_json()
                if state == "running":  # our own service was started beside it, and recorded
                    ours = json.loads((root / ".provision/services/app.json").read_text())
                    assert ours["pid"] != victim.pid and ours["start_ticks"] == _start_ticks(ours["pid"])
                    change = report.resources[0]["changes"][0]
                    assert f"PID {victim.pid} is another process" in change["reason"], change
        print(f"{tried} forged service records: {len(signalled)} unrelated processes signalled")
        assert signalled == []
    finally:
        for pid in started:
            subprocess.run(["kill", str(pid)], check=False)


def _gen_manifest(tmp_path: Path, root: Path, version: str) -> Path:
    return write_manifest(tmp_path, TargetHost("local", "local", str(root)), {
        "resources": [{"kind": "file", "path": "version.txt", "content": f"{version}\n", "notify": ["announce"]}],
        "handlers": {"announce": {"argv": [sys.executable, "-c", "print('new version')"]}},
    }, name=f"v{version}.yaml")


def _rollback(manifest: Path, ledger: Path | None = None, to: int | None = None) -> Any:
    return HostSession(load_manifest(manifest), RunOptions(ledger=ledger)).rollback(to)


def test_a_forged_generation_runs_nothing_on_rollback(tmp_path: Path) -> None:
    root = tmp_path / "root"
    marker = tmp_path / "pwned"
    evil = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"]
    old, new = _gen_manifest(tmp_path, root, "1"), _gen_manifest(tmp_path, root, "2")
    assert apply(old).generation == 1 and apply(new).generation == 2
    generation_one = root / ".provision" / "generations" / "000001.json"
    genuine = generation_one.read_text()

    forgeries: dict[str, Callable[[dict[str, Any]], None]] = {
        "a command resource added": lambda g: g["resources"].append(
            {"id": "command:evil", "kind": "command", "digest": "0" * 64, "notify": [],
             "spec": {"kind": "command", "name": "evil", "argv": evil, "creates": "never"}}),
        "a handler's argv replaced": lambda g: g["handlers_desired"]["announce"].update(argv=evil),
        "a file resource's content changed": lambda g: g["resources"][0]["spec"].update(content="forged\n"),
    }
    ran = []
    for name, forge in forgeries.items():
        record = json.loads(genuine)
        forge(record)
        generation_one.write_text(json.dumps(record))
        with pytest.raises(AgentError, match="generation 1 in .* was changed after the controller wrote it") as caught:
            _rollback(new, to=1)
        assert "Nothing was rolled back or run" in str(caught.value)
        if marker.exists() or (root / "version.txt").read_text() != "2\n":
            ran.append(name)
    # A generation file the controller never wrote at all.
    forged_three = json.loads(genuine)
    forge_command = forgeries["a command resource added"]
    forge_command(forged_three)
    forged_three["generation"] = 3
    (root / ".provision" / "generations" / "000003.json").write_text(json.dumps(forged_three))
    with pytest.raises(AgentError, match="generation 3 was not recorded by this controller"):
        _rollback(new, to=3)
    print(f"{len(forgeries) + 1} forged generations: {len(ran) + marker.exists()} ran anything")
    assert ran == [] and not marker.exists()

    # A controller without the record (another workstation) refuses, naming the fix.
    (root / ".provision" / "generations" / "000003.json").unlink()
    generation_one.write_text(genuine)
    with pytest.raises(ProvisionError, match="has no record of the generations written") as refused:
        _rollback(new, ledger=tmp_path / "elsewhere.sqlite")
    assert "Roll back from the controller that applied them" in str(refused.value)
    # The genuine generation still rolls back from the controller that wrote it, and so does the rollback's own.
    report = _rollback(new)
    assert report.ok and report.rollback_to == 1 and (root / "version.txt").read_text() == "1\n"
    assert _rollback(new, to=2).ok and (root / "version.txt").read_text() == "2\n"
    assert _rollback(new, to=report.generation).ok and (root / "version.txt").read_text() == "1\n"
