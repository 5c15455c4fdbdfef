"""Fleet no-op apply: provision vs Ansible vs pyinfra at 1, 10 and 50 converged hosts, side by side.

Every host is its own sshd on 127.0.0.1 (own port, own host key, pinned in one known_hosts file), and
every tool owns an equivalent desired state under its own directory of each host's root: a directory,
10 templated files (per-host variables in them) and an env line. After converging, the tools take turns
re-applying (interleaved, so load from elsewhere hits all three alike); we report the median wall time
of the whole command, the ratio to provision, and the cost of each added host.

All tools get the same parallelism: as many hosts at once as there are hosts (capped at --forks).
Ansible runs with pipelining and its default ControlPersist (SSH master connections survive between
runs, which favours it on repeated runs); pyinfra and provision open fresh connections each run.

    .venv/bin/python bench/fleet_noop.py [--runs 5] [--sizes 1,10,50] [--output bench/results/fleet-noop.md]

Every tool logs in as the same non-root user (--user, created if missing) whose shell startup is the
distribution's default: see bench/common.py. Needs root (it starts sshd). Ansible and pyinfra live in
their own venv (--tools-venv), never the project's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PROVISION, Tool, converge, ensure_tools, ensure_user, invoke, pyinfra_unchanged
from tests.support.fleet_hosts import FleetServers, fleet_servers

TEMPLATE = "label={{ label }}\nindex={{ index }}\nport={{ app_port }}\n"
FILES = 10


def host_root(home: Path, index: int, tool: str) -> Path:
    return home / "bench-fleet" / f"host{index:02d}" / tool


# -- the three equivalent desired states ------------------------------------------------------------------


@dataclass
class Fleet:
    work: Path
    servers: FleetServers
    user: str
    home: Path


def provision_tool(fleet: Fleet, count: int, forks: int) -> Tool:
    work, servers = fleet.work, fleet.servers
    base = work / f"provision-{count}"
    (base / "templates").mkdir(parents=True)
    (base / "templates" / "conf.j2").write_text(TEMPLATE)
    resources: list[dict[str, object]] = [{"kind": "directory", "path": "app/conf", "mode": "0755"}]
    resources += [{"kind": "file", "path": f"app/conf/file{i}.conf", "template": "conf.j2", "vars": {"index": i}}
                  for i in range(FILES)]
    resources.append({"kind": "envfile", "path": "app/app.env", "values": {"MODE": "fast"}})
    (base / "app.yaml").write_text(yaml.safe_dump({"name": "bench", "target": {"python": "/usr/bin/python3"},
                                                   "gpu": {"arch": "none"}, "resources": resources}))
    hosts = {f"host{i:02d}": {"connection": server.connection(fleet.user),
                              "root": str(host_root(fleet.home, i, "provision")),
                              "vars": {"label": f"host{i:02d}", "app_port": 8100 + i}}
             for i, server in enumerate(servers.servers[:count])}
    inventory = {"defaults": {"manifest": "app.yaml", "target": {"identity_file": str(servers.client_key)}},
                 "hosts": hosts, "rollout": {"forks": forks}}
    (base / "fleet.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    argv = [str(PROVISION), "fleet", "apply", str(base / "fleet.yaml"), "--json",
            "--known-hosts", str(servers.known_hosts)]

    def is_noop(done: subprocess.CompletedProcess[str]) -> bool:
        if done.returncode != 0:
            return False
        hosts_out = json.loads(done.stdout)["hosts"]
        return len(hosts_out) == count and all(h["status"] == "ok" and h["changed"] == 0 for h in hosts_out)

    return Tool("provision", argv, {"PROVISION_LEDGER": str(base / "state" / "ledger.sqlite")}, is_noop)


def ansible_tool(fleet: Fleet, count: int, forks: int, venv: Path) -> Tool:
    work, servers = fleet.work, fleet.servers
    base = work / f"ansible-{count}"
    base.mkdir()
    (base / "conf.j2").write_text(TEMPLATE)
    lines = [f"host{i:02d} ansible_host=127.0.0.1 ansible_port={server.port} app_port={8100 + i} "
             f"root={host_root(fleet.home, i, 'ansible')}" for i, server in enumerate(servers.servers[:count])]
    # One variable per line: in a [group:vars] section the rest of the line is the value.
    common = [f"ansible_user={fleet.user}", f"ansible_ssh_private_key_file={servers.client_key}",
              "ansible_python_interpreter=/usr/bin/python3",
              f"ansible_ssh_common_args='-o UserKnownHostsFile={servers.known_hosts} -o StrictHostKeyChecking=yes'"]
    (base / "inventory.ini").write_text("[fleet]\n" + "\n".join(lines) + "\n\n[fleet:vars]\n" + "\n".join(common)
                                        + "\n")
    tasks = [
        {"file": {"path": "{{ root }}/app/conf", "state": "directory", "mode": "0755"}},
        {"template": {"src": "conf.j2", "dest": "{{ root }}/app/conf/file{{ index }}.conf"},
         "loop": list(range(FILES)), "loop_control": {"loop_var": "index"},
         "vars": {"label": "{{ inventory_hostname }}"}},
        {"lineinfile": {"path": "{{ root }}/app/app.env", "line": "MODE=fast", "create": True, "mode": "0600"}},
    ]
    (base / "playbook.yml").write_text(yaml.safe_dump(
        [{"hosts": "fleet", "gather_facts": False, "tasks": tasks}], sort_keys=False))
    (base / "ansible.cfg").write_text(f"[defaults]\nhost_key_checking = True\nnocolor = True\nforks = {forks}\n"
                                      "[ssh_connection]\npipelining = True\n")
    env = {"ANSIBLE_CONFIG": str(base / "ansible.cfg"), "ANSIBLE_LOCAL_TEMP": str(base / "tmp")}
    argv = [str(venv / "bin" / "ansible-playbook"), "-i", str(base / "inventory.ini"), str(base / "playbook.yml")]

    def is_noop(done: subprocess.CompletedProcess[str]) -> bool:
        recap = [line for line in done.stdout.splitlines() if " : ok=" in line]
        return done.returncode == 0 and len(recap) == count and all("changed=0" in line for line in recap)

    return Tool("ansible", argv, env, is_noop)


def pyinfra_tool(fleet: Fleet, count: int, forks: int, venv: Path) -> Tool:
    work, servers = fleet.work, fleet.servers
    base = work / f"pyinfra-{count}"
    base.mkdir()
    (base / "conf.j2").write_text(TEMPLATE)
    hosts = [(f"host{i:02d}", {"ssh_hostname": "127.0.0.1", "ssh_port": server.port, "ssh_user": fleet.user,
                               "ssh_key": str(servers.client_key), "ssh_known_hosts_file": str(servers.known_hosts),
                               "ssh_strict_host_key_checking": "yes", "app_port": 8100 + i,
                               "root": str(host_root(fleet.home, i, "pyinfra"))})
             for i, server in enumerate(servers.servers[:count])]
    (base / "inventory.py").write_text(f"hosts = {hosts!r}\n")
    (base / "deploy.py").write_text(f"""\
from pyinfra import host
from pyinfra.operations import files

root = host.data.root
files.directory(path=f"{{root}}/app/conf", mode="755")
for index in range({FILES}):
    files.template(src={str(base / 'conf.j2')!r}, dest=f"{{root}}/app/conf/file{{index}}.conf",
                   label=host.name, index=index, app_port=host.data.app_port)
files.line(path=f"{{root}}/app/app.env", line="MODE=fast")
""")
    argv = [str(venv / "bin" / "pyinfra"), "-y", "--parallel", str(forks), str(base / "inventory.py"),
            str(base / "deploy.py")]

    return Tool("pyinfra", argv, is_noop=pyinfra_unchanged)


# -- measuring -----------------------------------------------------------------------------------------------


def measure(tool: Tool, cwd: Path) -> None:
    started = time.perf_counter()
    done = invoke(tool, cwd)
    elapsed = time.perf_counter() - started
    if not tool.is_noop(done):
        raise SystemExit(f"{tool.name}: a measured run was not a no-op:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    tool.times.append(elapsed)


def report(results: dict[int, list[Tool]], runs: int, load: tuple[float, float]) -> str:
    sizes = sorted(results)
    names = [t.name for t in results[sizes[0]]]
    median = {(n, t.name): statistics.median(t.times) for n in sizes for t in results[n]}
    rows = [f"Fleet no-op apply over SSH: {', '.join(map(str, sizes))} hosts (one sshd each on 127.0.0.1), "
            f"{runs} runs per tool and size, interleaved; median wall time of the whole command.",
            f"Machine: {os.cpu_count()} CPUs (controller, sshd and hosts share them); load average "
            f"{load[0]:.2f} before, {load[1]:.2f} after.", "",
            "| hosts | tool | median (s) | min | max | vs provision |", "|---|---|---|---|---|---|"]
    for n in sizes:
        for tool in results[n]:
            base = median[(n, "provision")]
            rows.append(f"| {n} | {tool.name} | {median[(n, tool.name)]:.3f} | {min(tool.times):.3f} | "
                        f"{max(tool.times):.3f} | {median[(n, tool.name)] / base:.1f}x |")
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        rows += ["", f"Cost per added host (median({last}) - median({first})) / {last - first}:", "",
                 "| tool | s per added host | vs provision |", "|---|---|---|"]
        slope = {name: (median[(last, name)] - median[(first, name)]) / (last - first) for name in names}
        for name in names:
            rows.append(f"| {name} | {slope[name]:.4f} | {slope[name] / slope['provision']:.1f}x |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1,10,50", help="host counts, comma-separated")
    parser.add_argument("--forks", type=int, default=50, help="hosts at once, for every tool")
    parser.add_argument("--tools-venv", type=Path, default=Path("/tmp/provision-bench-venv"))
    parser.add_argument("--tools", default="provision,ansible,pyinfra", help="which tools, comma-separated")
    parser.add_argument("--user", default="provbench", help="login user on every host (created if missing)")
    parser.add_argument("--output", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark starts one sshd per host and may create its login user")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    wanted = {name.strip() for name in args.tools.split(",")} | {"provision"}
    if wanted & {"ansible", "pyinfra"}:
        ensure_tools(args.tools_venv)

    home = ensure_user(args.user)
    work = Path(tempfile.mkdtemp(prefix="provision-fleet-bench-"))
    os.chmod(work, 0o755)  # sshd reads each server's authorized_keys as the login user
    shutil.rmtree(home / "bench-fleet", ignore_errors=True)
    load_before = os.getloadavg()[0]
    results: dict[int, list[Tool]] = {}
    try:
        with fleet_servers(work / "servers", max(sizes)) as servers:
            fleet = Fleet(work, servers, args.user, home)
            for count in sizes:
                forks = min(count, args.forks)
                tools = [provision_tool(fleet, count, forks)]
                if "ansible" in wanted:
                    tools.append(ansible_tool(fleet, count, forks, args.tools_venv))
                if "pyinfra" in wanted:
                    tools.append(pyinfra_tool(fleet, count, forks, args.tools_venv))
                for tool in tools:
                    converge(tool, work)
                for _ in range(args.runs):
                    for tool in tools:
                        measure(tool, work)
                results[count] = tools
                print(f"{count} hosts: " + ", ".join(f"{t.name} {statistics.median(t.times):.2f}s" for t in tools),
                      file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home / "bench-fleet", ignore_errors=True)
    table = report(results, args.runs, (load_before, os.getloadavg()[0]))
    print(table)
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
