"""No-op re-apply over SSH: provision vs Ansible (pipelining) vs pyinfra, on one converged host.

Each tool owns an equivalent desired state under its own root on the same sshd (127.0.0.1): a directory,
10 templated files, an env line, a venv with one pinned package (from a local index) and a git checkout
pinned to a commit. After one converging run each, the tools take turns re-applying; we report the
median wall time of the whole command and the SSH connections and sessions sshd saw per run.

    .venv/bin/python bench/noop.py [--runs 7] [--user provbench] [--output bench/results/noop-ssh.md]

Needs root (it starts sshd and, unless --user root, creates the login user). Ansible and pyinfra are
installed into their own venv (--tools-venv), never into the project's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    PROVISION,
    Tool,
    chown_to,
    converge,
    ensure_tools,
    ensure_user,
    invoke,
    pyinfra_unchanged,
)
from tests.support.gitrepos import make_upstream
from tests.support.servers import serve_directory
from tests.support.sshd import SshServer, start_sshd
from tests.support.wheels import build_wheel, write_simple_index

TEMPLATE = "app={{ app }}\nindex={{ index }}\nport={{ port }}\n"
FILES = 10


@dataclass
class Fixture:
    server: SshServer
    user: str
    home: Path
    work: Path
    index: str
    repo_url: str
    commit: str


@dataclass
class SshTool(Tool):
    connections: list[int] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)


# -- fixture -------------------------------------------------------------------------------------------------


def debug_logging(server: SshServer) -> None:
    """Restart sshd at DEBUG1 so that every session channel (not just every connection) is logged."""
    server.stop()
    config = server.directory / "sshd_config"
    config.write_text(config.read_text().replace("LogLevel INFO", "LogLevel DEBUG1"))
    server.start()


def count(server: SshServer) -> tuple[int, int]:
    text = server.log.read_text(errors="replace")
    return text.count("Accepted publickey"), text.count("server_input_channel_open: ctype session")


def build_fixture(work: Path, user: str, index: str) -> Fixture:
    home = ensure_user(user) if user != "root" else Path("/root")
    upstream = make_upstream(work / "upstream", "app")
    commit = upstream.commit({"README.md": "bench\n", "app.py": "print('bench')\n"}, "one")
    # The login user clones the upstream; git refuses repositories owned by someone else.
    chown_to(work / "upstream", user)
    server = start_sshd(work / "sshd")
    debug_logging(server)
    return Fixture(server, user, home, work, index, upstream.url, commit)


# -- the three equivalent desired states ------------------------------------------------------------------


def provision_tool(fx: Fixture) -> SshTool:
    (fx.work / "provision" / "templates").mkdir(parents=True)
    (fx.work / "provision" / "templates" / "conf.j2").write_text(TEMPLATE)
    resources: list[dict[str, object]] = [{"kind": "directory", "path": "app/conf", "mode": "0755"}]
    resources += [{"kind": "file", "path": f"app/conf/file{i}.conf", "template": "conf.j2",
                   "vars": {"app": "bench", "index": i, "port": 8188}} for i in range(FILES)]
    resources += [
        {"kind": "envfile", "path": "app/app.env", "values": {"MODE": "fast"}},
        {"kind": "venv", "path": "venv", "python": "/usr/bin/python3"},
        {"kind": "pip", "venv": "venv", "packages": ["provdemo==1.0.0"], "index_url": fx.index},
        {"kind": "git", "path": "src/app", "repo": fx.repo_url, "ref": fx.commit},
    ]
    manifest = fx.work / "provision" / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"name": "bench", "target": {
        "connection": fx.server.connection(fx.user), "root": str(fx.home / "bench-noop" / "provision"),
        "identity_file": str(fx.server.client_key), "python": "/usr/bin/python3",
    }, "resources": resources}, sort_keys=False))
    argv = [str(PROVISION), "apply", str(manifest),
            "--known-hosts", str(fx.server.known_hosts)]
    return SshTool("provision", argv, is_noop=lambda done: done.returncode == 0 and "Applied: 0 changed" in done.stdout)


def ansible_tool(fx: Fixture, venv: Path) -> SshTool:
    root = fx.home / "bench-noop" / "ansible"
    base = fx.work / "ansible"
    base.mkdir()
    (base / "conf.j2").write_text(TEMPLATE)
    (base / "inventory.ini").write_text(
        f"bench ansible_host=127.0.0.1 ansible_port={fx.server.port} ansible_user={fx.user} "
        f"ansible_ssh_private_key_file={fx.server.client_key} ansible_python_interpreter=/usr/bin/python3 "
        f"ansible_ssh_common_args='-o UserKnownHostsFile={fx.server.known_hosts} -o StrictHostKeyChecking=yes'\n"
    )
    tasks = [
        {"file": {"path": f"{root}/app/conf", "state": "directory", "mode": "0755"}},
        {"template": {"src": "conf.j2", "dest": f"{root}/app/conf/file{{{{ index }}}}.conf"},
         "loop": list(range(FILES)), "loop_control": {"loop_var": "index"},
         "vars": {"app": "bench", "port": 8188}},
        {"lineinfile": {"path": f"{root}/app/app.env", "line": "MODE=fast", "create": True, "mode": "0600"}},
        {"pip": {"name": "provdemo==1.0.0", "virtualenv": f"{root}/venv",
                 "virtualenv_command": "/usr/bin/python3 -m venv", "extra_args": f"--index-url {fx.index}"}},
        {"git": {"repo": fx.repo_url, "dest": f"{root}/src/app", "version": fx.commit}},
    ]
    (base / "playbook.yml").write_text(yaml.safe_dump(
        [{"hosts": "bench", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    # Ansible's defaults otherwise (ControlPersist keeps its SSH master connection alive between runs).
    (base / "ansible.cfg").write_text("[defaults]\nhost_key_checking = True\nnocolor = True\n"
                                      "[ssh_connection]\npipelining = True\n")
    env = {"ANSIBLE_CONFIG": str(base / "ansible.cfg"), "ANSIBLE_LOCAL_TEMP": str(base / "tmp")}
    argv = [str(venv / "bin" / "ansible-playbook"), "-i", str(base / "inventory.ini"), str(base / "playbook.yml")]
    return SshTool("ansible", argv, env, is_noop=lambda done: done.returncode == 0 and "changed=0" in done.stdout)


def pyinfra_tool(fx: Fixture, venv: Path) -> SshTool:
    root = fx.home / "bench-noop" / "pyinfra"
    base = fx.work / "pyinfra"
    base.mkdir()
    (base / "conf.j2").write_text(TEMPLATE)
    (base / "inventory.py").write_text(
        f"hosts = [('127.0.0.1', {{'ssh_port': {fx.server.port}, 'ssh_user': {fx.user!r}, "
        f"'ssh_key': {str(fx.server.client_key)!r}, 'ssh_known_hosts_file': {str(fx.server.known_hosts)!r}, "
        "'ssh_strict_host_key_checking': 'yes'})]\n"
    )
    # pyinfra's git.repo cannot pin a commit idempotently (it re-checks-out every run); tracking the branch
    # whose tip is the pinned commit (pull=True compares the local commit with the upstream tip) is the
    # closest no-op it offers.
    (base / "deploy.py").write_text(f"""\
from pyinfra.operations import files, git, pip

files.directory(path={str(root / 'app/conf')!r}, mode="755")
for index in range({FILES}):
    files.template(src={str(base / 'conf.j2')!r}, dest=f"{root}/app/conf/file{{index}}.conf",
                   app="bench", index=index, port=8188)
files.line(path={str(root / 'app/app.env')!r}, line="MODE=fast")
pip.venv(path={str(root / 'venv')!r}, python="/usr/bin/python3")
pip.packages(packages=["provdemo==1.0.0"], virtualenv={str(root / 'venv')!r},
             extra_install_args="--index-url {fx.index}")
git.repo(src={fx.repo_url!r}, dest={str(root / 'src/app')!r}, branch="main", pull=True)
""")
    argv = [str(venv / "bin" / "pyinfra"), "-y", str(base / "inventory.py"), str(base / "deploy.py")]
    return SshTool("pyinfra", argv, is_noop=pyinfra_unchanged)


# -- measuring -----------------------------------------------------------------------------------------------


def measure(tool: SshTool, fx: Fixture) -> None:
    time.sleep(0.3)  # let sshd finish logging the previous tool's sessions
    connections, sessions = count(fx.server)
    started = time.perf_counter()
    done = invoke(tool, fx.work)
    elapsed = time.perf_counter() - started
    if not tool.is_noop(done):
        raise SystemExit(f"{tool.name}: a measured run was not a no-op:\n{done.stdout[-3000:]}")
    time.sleep(0.3)
    after_connections, after_sessions = count(fx.server)
    tool.times.append(elapsed)
    tool.connections.append(after_connections - connections)
    tool.sessions.append(after_sessions - sessions)


def report(tools: list[SshTool], runs: int, user: str) -> str:
    base = statistics.median(tools[0].times)
    rows = [f"No-op re-apply over SSH (127.0.0.1, login user `{user}`), {runs} runs each, interleaved.", "",
            "| tool | median wall (s) | min | max | SSH connections / run | SSH sessions / run | vs provision |",
            "|---|---|---|---|---|---|---|"]
    for tool in tools:
        median = statistics.median(tool.times)
        rows.append(
            f"| {tool.name} | {median:.3f} | {min(tool.times):.3f} | {max(tool.times):.3f} | "
            f"{statistics.median(tool.connections):g} | {statistics.median(tool.sessions):g} | "
            f"{median / base:.1f}x |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--user", default="provbench", help="login user on the sshd (created if missing)")
    parser.add_argument("--tools-venv", type=Path, default=Path("/tmp/provision-bench-venv"))
    parser.add_argument("--output", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark starts sshd and may create its login user")
    ensure_tools(args.tools_venv)

    work = Path(tempfile.mkdtemp(prefix="provision-bench-"))
    os.chmod(work, 0o755)
    house = work / "wheelhouse"
    build_wheel(house, "provdemo", "1.0.0", requires=["provdep==1.0.0"])
    build_wheel(house, "provdep", "1.0.0")
    write_simple_index(house, work / "index")
    fx: Fixture | None = None
    try:
        with serve_directory(work / "index") as base_url:
            fx = build_fixture(work, args.user, f"{base_url}/simple")
            shutil.rmtree(fx.home / "bench-noop", ignore_errors=True)
            tools = [provision_tool(fx), ansible_tool(fx, args.tools_venv), pyinfra_tool(fx, args.tools_venv)]
            for tool in tools:
                converge(tool, fx.work)
            for _ in range(args.runs):
                for tool in tools:
                    measure(tool, fx)
            table = report(tools, args.runs, args.user)
    finally:
        if fx is not None:
            fx.server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(table)
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
