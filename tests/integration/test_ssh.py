"""The SSH transport against real OpenSSH servers: host keys, errors with fixes, one connection, drops."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.agent_client import AgentClient
from provisioner.errors import TransportError
from provisioner.manifest.model import Target
from provisioner.transport import ConnectOptions, open_transport
from provisioner.transport.ssh import SshTransport
from tests.support.hosts import TargetHost, write_manifest
from tests.support.runs import apply, plan
from tests.support.sshd import SshServer, _free_port, shared_sshd, ssh_target_host, start_sshd

pytestmark = pytest.mark.ssh

PROVISION = [sys.executable, "-m", "provisioner"]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> SshServer:
    return shared_sshd(request)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[SshServer]:
    """A server of this test's own, for tests that kill or restart it."""
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


def _target(server: SshServer, **extra: object) -> Target:
    fields: dict[str, object] = {"connection": server.connection(), "root": "/tmp/provision-ssh-test",
                                 "identity_file": str(server.client_key), "connect_timeout": 5}
    return Target.model_validate({**fields, **extra})


def _connect(server: SshServer, known_hosts: Path, trust: bool = False, **extra: object) -> SshTransport:
    transport = open_transport(_target(server, **extra), ConnectOptions(trust_new_hosts=trust, known_hosts=known_hosts))
    assert isinstance(transport, SshTransport)
    return transport


# -- host keys -----------------------------------------------------------------------------------------------


def test_unknown_host_is_refused_with_the_exact_fix(server: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    with pytest.raises(TransportError) as refused:
        _connect(server, known_hosts)
    message = str(refused.value)
    assert "--trust-new-hosts" in message
    keyscan = f"ssh-keyscan -p {server.port} 127.0.0.1 >> {known_hosts}"
    assert keyscan in message
    assert not known_hosts.exists(), "nothing is recorded without --trust-new-hosts"

    # The command the message names really is the fix.
    subprocess.run(["sh", "-c", keyscan], check=True, capture_output=True, timeout=30)
    with _connect(server, known_hosts) as transport:
        assert transport.run(["true"]).ok


def test_trust_new_hosts_records_the_key_and_later_runs_check_it(server: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"
    with _connect(server, known_hosts, trust=True) as transport:
        assert transport.run(["echo", "hello"]).stdout == "hello"
    assert known_hosts.read_text() == server.known_hosts_line()
    with _connect(server, known_hosts) as transport:
        assert transport.run(["true"]).ok
    assert known_hosts.read_text() == server.known_hosts_line(), "a known key is not recorded twice"


def test_a_changed_host_key_is_refused_even_with_trust_new_hosts(server: SshServer, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key_type, key = Path(f"{other}.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{server.port} {key_type} {key}\n")
    with pytest.raises(TransportError) as refused:
        _connect(server, known_hosts, trust=True)
    message = str(refused.value)
    assert "HOST KEY HAS CHANGED" in message
    assert "never accepts a changed key" in message
    assert f"ssh-keygen -R '[127.0.0.1]:{server.port}' -f {known_hosts}" in message
    assert known_hosts.read_text() == f"[127.0.0.1]:{server.port} {key_type} {key}\n", "the file is untouched"


# -- errors that name the host and the fix ------------------------------------------------------------------


def test_authentication_failure_names_the_fix(server: SshServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(TransportError) as failed:
        _connect(server, server.known_hosts, identity_file=str(stranger))
    message = str(failed.value)
    assert server.connection() in message
    assert "authentication failed for user 'root'" in message
    assert "identity_file" in message


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    port = _free_port()
    target = Target(connection=f"ssh://root@127.0.0.1:{port}", root="/tmp/x", connect_timeout=2)
    with pytest.raises(TransportError) as refused:
        open_transport(target, ConnectOptions(known_hosts=tmp_path / "known_hosts"))
    message = str(refused.value)
    assert f"connection refused by 127.0.0.1:{port} (tried 3 times)" in message
    assert "Is sshd running" in message


def test_unknown_host_name_is_reported(tmp_path: Path) -> None:
    target = Target(connection="ssh://root@no-such-host.invalid", root="/tmp/x", connect_timeout=2)
    with pytest.raises(TransportError, match="cannot resolve the host name 'no-such-host.invalid'"):
        open_transport(target, ConnectOptions(known_hosts=tmp_path / "known_hosts"))


def test_become_runs_through_sudo_or_says_it_is_missing(server: SshServer) -> None:
    with _connect(server, server.known_hosts, become=True) as transport:
        if subprocess.run(["sh", "-c", "command -v sudo"], capture_output=True).returncode != 0:
            with pytest.raises(TransportError, match="sudo is not installed"):
                transport.run(["id", "-u"])
        else:
            assert transport.run(["id", "-u"]).stdout == "0"


# -- the pipe itself ----------------------------------------------------------------------------------------


def test_stdout_lines_stream_while_the_command_runs(server: SshServer, tmp_path: Path) -> None:
    # The command waits for a file that only the line callback creates: without streaming it would time out
    # (after ~60 s, generous so that a loaded machine's late line still counts as streamed).
    flag = tmp_path / "seen-first-line"
    script = f"echo first; i=0; while [ ! -e {flag} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; " \
             f"[ -e {flag} ] && echo second || echo late"
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line == "first":
            flag.touch()

    with _connect(server, server.known_hosts) as transport:
        result = transport.run(["sh", "-c", script], on_stdout_line=on_line)
    assert lines == ["first", "second"]
    assert result.stdout == "first\nsecond"


def test_stdin_env_and_exit_status(server: SshServer) -> None:
    secret = "s3cret value; $(rm -rf /)"
    transport = _connect(server, server.known_hosts)
    with transport:
        echoed = transport.run(["sh", "-c", 'printf %s "$TOKEN"; cat; echo oops >&2; exit 3'],
                               stdin=b"payload\nline two", env={"TOKEN": secret})
        command, _ = transport._command(["true"], {"TOKEN": secret})
        big = transport.run(["wc", "-c"], stdin=b"x" * 3_000_000)
    assert echoed.returncode == 3
    assert echoed.stdout == secret + "payload\nline two"
    assert echoed.stderr == "oops\n"
    assert secret not in command, "environment values travel on stdin, never in the remote command line"
    assert big.stdout.strip() == "3000000"


def test_command_timeout(server: SshServer) -> None:
    with _connect(server, server.known_hosts) as transport:
        with pytest.raises(TransportError, match="timed out after 1s"):
            transport.run(["sleep", "3"], timeout=1)
        assert transport.run(["true"]).ok, "the connection survives an abandoned command"


def test_put_and_get_over_sftp(server: SshServer, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(100_000))
    remote = tmp_path / "remote" / "deep" / "copy.bin"
    with _connect(server, server.known_hosts) as transport:
        transport.put(source, str(remote), mode=0o640)
        transport.get(str(remote), tmp_path / "back.bin")
        with pytest.raises(TransportError, match="does not exist"):
            transport.get(str(tmp_path / "missing"), tmp_path / "never")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    assert remote.stat().st_mode & 0o777 == 0o640


def test_ssh_config_alias_and_proxyjump(server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    hop = f"    HostName 127.0.0.1\n    Port {server.port}\n    User root\n    IdentityFile {server.client_key}\n"
    (home / ".ssh" / "config").write_text(
        f"Host provtarget\n{hop}\nHost provjump\n{hop}\nHost provvia\n{hop}    ProxyJump provjump\n"
    )
    monkeypatch.setenv("HOME", str(home))
    for alias, logins in (("provtarget", 1), ("provvia", 2)):
        before = server.accepted_logins()
        target = Target(connection=f"ssh://{alias}", root="/tmp/x")
        with open_transport(target, ConnectOptions(known_hosts=server.known_hosts)) as transport:
            assert transport.run(["echo", alias]).stdout == alias
        expected = before + logins
        assert _logins_reach(server, expected), (alias, server.accepted_logins())


# -- one connection per run ---------------------------------------------------------------------------------


def test_one_connection_serves_every_call_of_a_run(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    host = ssh_target_host(request, tmp_path)
    server = shared_sshd(request)
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "directory", "path": "data"},
        {"kind": "file", "path": "data/a.txt", "content": "a\n"},
    ]})
    for step in (lambda: plan(manifest), lambda: apply(manifest), lambda: plan(manifest)):
        expected = server.accepted_logins() + 1
        step()
        assert _logins_reach(server, expected), server.accepted_logins() - expected + 1

    before = server.accepted_logins()
    target = Target.model_validate(host.target())
    with open_transport(target) as transport:
        client = AgentClient(transport)
        for op in ("facts", "probe", "generations"):
            client.call(op, {"root": host.root, "resources": []})
        assert isinstance(transport, SshTransport) and transport.sessions == 3
    assert _logins_reach(server, before + 1)


# -- the CLI over SSH, and a connection that drops mid-apply ------------------------------------------------


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROVISION, *args], capture_output=True, text=True, timeout=timeout)


def test_cli_plan_and_apply_over_ssh(server: SshServer, tmp_path: Path) -> None:
    host = TargetHost("ssh", server.connection(), str(tmp_path / "root"),
                      target_extra={"identity_file": str(server.client_key)})
    manifest = write_manifest(tmp_path, host, {"resources": [{"kind": "file", "path": "motd", "content": "hi\n"}]})
    known_hosts = tmp_path / "known_hosts"

    refused = _cli("plan", str(manifest), "--known-hosts", str(known_hosts))
    assert refused.returncode == 1 and "--trust-new-hosts" in refused.stderr and "Traceback" not in refused.stderr

    drift = _cli("plan", str(manifest), "--known-hosts", str(known_hosts), "--trust-new-hosts")
    assert drift.returncode == 2, drift.stderr
    assert known_hosts.read_text() == server.known_hosts_line()
    applied = _cli("apply", str(manifest), "--known-hosts", str(known_hosts))
    assert applied.returncode == 0, applied.stderr
    assert (tmp_path / "root" / "motd").read_text() == "hi\n"
    clean = _cli("plan", str(manifest), "--known-hosts", str(known_hosts), "--json")
    assert clean.returncode == 0, clean.stderr


def test_sshd_killed_mid_apply_fails_cleanly_and_the_next_apply_converges(
    own_server: SshServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    host = TargetHost("ssh", own_server.connection(), str(root),
                      target_extra={"identity_file": str(own_server.client_key)})
    manifest = write_manifest(tmp_path, host, {"resources": [
        {"kind": "file", "path": "before.txt", "content": "1\n"},
        {"kind": "command", "name": "slow", "argv": ["sh", "-c", "touch started; sleep 30; touch done"],
         "creates": "done"},
        {"kind": "file", "path": "after.txt", "content": "2\n"},
    ]})
    known_hosts = ["--known-hosts", str(own_server.known_hosts)]
    running = subprocess.Popen([*PROVISION, "apply", str(manifest), *known_hosts],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (root / "started").exists() or running.poll() is not None, 60)
        assert (root / "started").exists(), f"the slow command never started: {running.poll()}"
        own_server.kill_sessions()
        own_server.stop()
        stdout, stderr = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 1, (stdout, stderr)
    assert "Traceback" not in stderr
    assert "connection dropped" in stderr and own_server.connection() in stderr
    assert not (root / "after.txt").exists()

    # A short sleep keeps the retry quick; `done` is still missing, so the command runs again.
    manifest.write_text(manifest.read_text().replace("sleep 30", "sleep 0"))
    own_server.start()
    again = _cli("apply", str(manifest), *known_hosts)
    assert again.returncode == 0, again.stderr
    assert (root / "done").exists() and (root / "after.txt").read_text() == "2\n"
    assert _cli("plan", str(manifest), *known_hosts).returncode == 0


def _logins_reach(server: SshServer, expected: int) -> bool:
    return _wait_for(lambda: server.accepted_logins() == expected)


def _wait_for(condition: object, seconds: float = 10) -> bool:
    """Poll `condition` (sshd writes its log asynchronously) for a bounded time."""
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())
