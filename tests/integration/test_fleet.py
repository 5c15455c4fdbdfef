"""Fleet plan and rollouts against 20 real sshd hosts on loopback, with injected failures.

Failures are real: a host whose check program fails (a `broken` file in its root), and a host whose sshd
is stopped. Every scenario is checked against the hosts' files, their generation records, what sshd
saw (logins), and the ledger.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from provisioner.agent.rootlock import RootLock
from provisioner.commands.fleet import fleet as fleet_group
from provisioner.engine import PlanReport, RunOptions
from provisioner.fleet.inventory import load_inventory
from provisioner.fleet.planner import FleetPlan
from provisioner.fleet.report_html import render_plan_html
from provisioner.fleet.results import FleetApplyResult, FleetPlanResult, HostPlan
from provisioner.fleet.runner import FleetApply, FleetOptions
from provisioner.ledger import Ledger, LedgerEntry
from provisioner.transport import ConnectOptions
from tests.support.fleet_hosts import FleetServers, fleet_servers, host_name, read_generations, write_fleet
from tests.support.gpu_standin import gpu_python

pytestmark = [pytest.mark.ssh, pytest.mark.timeout(240)]

HOSTS = 20
HEALTH_CHECK = {"name": "healthy", "argv": ["test", "!", "-e", "broken"]}

MANIFEST = """\
name: app
gpu: {arch: none}
vars: {version: 1}
resources:
  - {kind: directory, path: data}
  - {kind: file, path: app.conf, template: app.conf.j2}
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServers]:
    with fleet_servers(tmp_path_factory.mktemp("fleet-sshd"), HOSTS) as running:
        yield running


class Fleet:
    """One test's fleet: fresh target roots on the shared servers, its own ledger and rollout state."""

    def __init__(self, servers: FleetServers, directory: Path) -> None:
        self.servers = servers
        self.directory = directory
        self.roots = directory / "roots"
        (directory / "templates").mkdir(parents=True)
        (directory / "templates" / "app.conf.j2").write_text("version={{ version }}\nport={{ port }}\n")
        (directory / "app.yaml").write_text(MANIFEST)
        self.ledger = Ledger(directory / "state" / "ledger.sqlite")
        self.inventory = directory / "fleet.yaml"

    def write(self, rollout: dict[str, Any] | None = None, **kwargs: Any) -> Path:
        return write_fleet(self.directory, self.servers, self.roots, "app.yaml", rollout, **kwargs)

    def options(self, **kwargs: Any) -> FleetOptions:
        connect = ConnectOptions(known_hosts=self.servers.known_hosts)
        return FleetOptions(forks=HOSTS, run=RunOptions(connect=connect), **kwargs)

    def apply(self, limit: str | None = None, **kwargs: Any) -> FleetApplyResult:
        inventory = load_inventory(self.inventory)
        return FleetApply(inventory, inventory.select(limit), self.ledger, self.options(**kwargs)).run()

    def plan(self) -> FleetPlanResult:
        inventory = load_inventory(self.inventory)
        return FleetPlan(inventory, inventory.hosts, self.ledger, self.options()).run()

    def root(self, index: int) -> Path:
        return self.roots / host_name(index)

    def break_host(self, index: int) -> None:
        self.root(index).mkdir(parents=True, exist_ok=True)
        (self.root(index) / "broken").write_text("the health check fails while this file exists\n")

    def fix_host(self, index: int) -> None:
        (self.root(index) / "broken").unlink()

    def config(self, index: int) -> str | None:
        path = self.root(index) / "app.conf"
        return path.read_text() if path.exists() else None

    def logins(self) -> list[int]:
        return [server.accepted_logins() for server in self.servers.servers]

    def rows(self, run_id: str) -> dict[str, LedgerEntry]:
        rows = [e for e in self.ledger.history(limit=10_000) if e.run_id == run_id]
        by_host = {e.host: e for e in rows}
        assert len(by_host) == len(rows), "one ledger row per host and run"
        return by_host


@pytest.fixture
def fleet(servers: FleetServers, tmp_path: Path) -> Fleet:
    servers.ensure_running()
    return Fleet(servers, tmp_path)


def statuses(result: FleetApplyResult) -> dict[str, str]:
    return {h.name: h.status for h in result.hosts}


def test_plan_apply_and_replan_across_20_hosts(fleet: Fleet) -> None:
    fleet.write({"serial": [1, 5, "50%"]}, host_vars={3: {"version": 7}})
    before = fleet.plan()
    assert before.exit_code() == 2 and {h.status for h in before.hosts} == {"drift"}

    result = fleet.apply()
    assert result.exit_code() == 0 and result.aborted is None
    assert set(statuses(result).values()) == {"ok"}
    assert [h.batch for h in result.hosts] == [1] + [2] * 5 + [3] * 10 + [4] * 4
    # Per-host and default variables reached each host's file.
    assert fleet.config(0) == "version=1\nport=8100\n"
    assert fleet.config(3) == "version=7\nport=8103\n"
    assert fleet.config(19) == "version=1\nport=8119\n"

    rows = fleet.rows(result.run_id)
    assert set(rows) == {host_name(i) for i in range(HOSTS)}
    assert {(r.command, r.status, r.generation, r.changed) for r in rows.values()} == {("apply", "ok", 1, 2)}
    for index in range(HOSTS):
        assert [g["status"] for g in read_generations(fleet.root(index))] == ["ok"]
        assert Path(str(result.hosts[index].log)).read_text().count("applying") == 2

    after = fleet.plan()
    assert after.exit_code() == 0
    plan_rows = fleet.rows(after.run_id)
    assert {(r.command, r.status) for r in plan_rows.values()} == {("plan", "ok")}


def test_a_failing_canary_stops_the_rollout(fleet: Fleet) -> None:
    fleet.write({"canary": 1, "serial": 5, "checks": [HEALTH_CHECK]})
    fleet.break_host(0)
    logins = fleet.logins()

    result = fleet.apply()
    assert result.exit_code() == 1
    assert result.aborted and "canary batch failed on gpu-00" in result.aborted
    assert statuses(result) == {host_name(0): "failed", **{host_name(i): "not-run" for i in range(1, HOSTS)}}
    assert "healthy" in str(result.hosts[0].error)
    # Nothing reached the other hosts but the read-only preflight (one SSH login each): no files, no generations.
    assert all(fleet.config(i) is None for i in range(1, HOSTS))
    assert all(read_generations(fleet.root(i)) == [] for i in range(1, HOSTS))
    assert fleet.logins()[1:] == [n + 1 for n in logins[1:]]
    assert list(fleet.rows(result.run_id)) == [host_name(0)]


def test_max_fail_percentage_continues_at_the_limit_and_aborts_past_it(fleet: Fleet) -> None:
    fleet.write({"serial": 10, "max_fail_percentage": 20, "checks": [HEALTH_CHECK]})
    fleet.break_host(0)
    fleet.break_host(1)

    at_limit = fleet.apply()  # 2 of 10 = 20%: equalled, so the second batch still runs
    assert at_limit.aborted is None and at_limit.exit_code() == 1
    assert [h.name for h in at_limit.hosts if h.status == "failed"] == [host_name(0), host_name(1)]
    assert at_limit.count("ok") == 18
    assert len(fleet.rows(at_limit.run_id)) == HOSTS

    # A third failure in the first batch, this time a host that cannot be reached: 30% > 20%.
    fleet.servers.servers[2].stop()
    logins = fleet.logins()
    past_limit = fleet.apply()
    assert past_limit.aborted and "3 of 10 hosts failed" in past_limit.aborted
    got = statuses(past_limit)
    assert got[host_name(2)] == "unreachable" and "connection refused" in str(past_limit.hosts[2].error)
    assert [got[host_name(i)] for i in range(10, HOSTS)] == ["not-run"] * 10
    # The hosts after the abort saw only the read-only preflight (one login each) and kept their generation.
    assert fleet.logins()[10:] == [n + 1 for n in logins[10:]]
    assert all(len(read_generations(fleet.root(i))) == 1 for i in range(10, HOSTS))
    rows = fleet.rows(past_limit.run_id)
    assert sorted(rows) == [host_name(i) for i in range(10)]
    assert rows[host_name(2)].status == "unreachable" and rows[host_name(3)].status == "ok"


def test_resume_skips_the_hosts_that_finished(fleet: Fleet) -> None:
    fleet.write({"serial": 5, "max_fail_percentage": 0, "checks": [HEALTH_CHECK]})
    fleet.break_host(7)
    first = fleet.apply()
    assert first.aborted and first.count("ok") == 9 and first.count("not-run") == 10
    assert statuses(first)[host_name(7)] == "failed"

    fleet.fix_host(7)
    logins = fleet.logins()
    resumed = fleet.apply(resume=True)
    assert resumed.exit_code() == 0 and resumed.resumed_from == first.run_id
    finished = {host_name(i) for i in range(10) if i != 7}
    assert {h.name for h in resumed.hosts if h.status == "skipped"} == finished
    assert {h.name for h in resumed.hosts if h.status == "ok"} == {host_name(i) for i in [7, *range(10, 20)]}
    after = fleet.logins()
    assert [after[i] - logins[i] for i in range(10) if i != 7] == [0] * 9, "finished hosts were not contacted"
    assert all(after[i] > logins[i] for i in [7, *range(10, 20)])
    assert set(fleet.rows(resumed.run_id)) == {host_name(i) for i in [7, *range(10, 20)]}

    # A changed desired state is not "finished": resuming again redoes exactly the hosts it changes.
    fleet.write({"serial": 5, "checks": [HEALTH_CHECK]}, host_vars={4: {"version": 2}})
    again = fleet.apply(resume=True)
    assert [h.name for h in again.hosts if h.status == "ok"] == [host_name(4)]
    assert fleet.config(4) == "version=2\nport=8104\n"


def test_failed_hosts_roll_back_to_their_previous_generation(fleet: Fleet) -> None:
    rollout = {"max_fail_percentage": 50, "rollback_on_failure": True, "checks": [HEALTH_CHECK]}
    fleet.write(rollout, defaults_vars={"version": 1})
    assert fleet.apply().exit_code() == 0

    fleet.write(rollout, defaults_vars={"version": 2})
    fleet.break_host(4)
    fleet.break_host(9)
    result = fleet.apply()
    assert result.aborted is None and result.exit_code() == 1
    for index in range(HOSTS):
        host = result.hosts[index]
        if index in (4, 9):
            assert host.status == "failed" and host.generation == 2
            assert host.rollback == {"ok": True, "to": 1, "generation": 3, "error": None}
            assert fleet.config(index) == f"version=1\nport={8100 + index}\n"
            records = read_generations(fleet.root(index))
            assert [(g["generation"], g["status"], g["manifest"].get("rollback_to")) for g in records] == [
                (1, "ok", None), (2, "ok", None), (3, "ok", 1)]
        else:
            assert host.status == "ok" and host.rollback is None
            assert fleet.config(index) == f"version=2\nport={8100 + index}\n"

    rows = fleet.rows(result.run_id)
    assert rows[host_name(4)].status == "rolled-back" and rows[host_name(4)].generation == 2
    assert (rows[host_name(4)].summary or {})["rollback"]["to"] == 1
    assert sum(1 for r in rows.values() if r.status == "ok") == 18


def test_cli_reports_json_markdown_html_and_limits(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet.write({"forks": 8}, count=4, groups={"canary": {"hosts": [host_name(0), host_name(1)]}})
    monkeypatch.setenv("PROVISION_LEDGER", str(fleet.ledger.path))
    runner = CliRunner()
    known = ["--known-hosts", str(fleet.servers.known_hosts)]

    planned = runner.invoke(fleet_group, ["plan", str(fleet.inventory), "--json", *known])
    assert planned.exit_code == 2, planned.output
    document = json.loads(planned.stdout)
    assert document["summary"] == {"ok": 0, "drift": 4, "error": 0, "unreachable": 0}
    assert document["hosts"][0]["areas"]["other"]["state"] == "drift"

    applied = runner.invoke(fleet_group, ["apply", str(fleet.inventory), "--limit", "canary,gpu-03", *known])
    assert applied.exit_code == 0, applied.output
    assert "gpu-00" in applied.stderr and "3 ok" in applied.stdout

    markdown = runner.invoke(fleet_group, ["plan", str(fleet.inventory), "--format", "md", *known])
    assert markdown.exit_code == 2, markdown.output
    assert "| gpu-00 |" in markdown.stdout and "- **gpu-02** (drift)" in markdown.stdout
    html_path = fleet.directory / "plan.html"
    page_run = runner.invoke(fleet_group, ["plan", str(fleet.inventory), "--format", "html", "-o", str(html_path),
                                           *known])
    assert page_run.exit_code == 2, page_run.output
    page = html_path.read_text()
    assert page.count("<tr data-status=") == 4 and "http" not in page.replace("http-equiv", "")

    bad = runner.invoke(fleet_group, ["apply", str(fleet.inventory), "--limit", "nope", *known])
    assert bad.exit_code == 1 and "--limit 'nope' matches no host or group" in bad.stderr


def _synthetic_plan(count: int) -> FleetPlanResult:
    """A plan of `count` hosts with every kind of cell, for rendering without `count` servers."""
    hosts = []
    for index in range(count):
        status = "ok"
        areas: dict[str, list[dict[str, Any]]] = {
            "torch": [{"id": "pip:venv/torch", "status": "ok", "changes": []}],
            "comfyui": [{"id": "git:ComfyUI", "status": "ok", "changes": []}],
            "models": [{"id": f"download:models/m{j}.safetensors", "status": "ok", "changes": []} for j in range(3)],
            "env": [{"id": "envfile:comfyui.env", "status": "ok", "changes": []}],
            "service": [{"id": "service:comfyui", "status": "ok", "changes": []}],
        }
        if index % 7 == 3:
            status = "drift"
            areas["comfyui"] = [{"id": "git:ComfyUI", "status": "change", "changes": [
                {"field": "ref", "action": "change", "old": "v0.3.60", "new": "v0.3.62", "reason": "ref moved"}]}]
        if index % 11 == 5:
            status = "drift"
            areas["models"][0] = {"id": "download:models/m0.safetensors", "status": "create", "changes": [
                {"field": "file", "action": "create", "old": None, "new": "12.0 GB", "reason": "missing"}]}
        gpu = {"text": "NVIDIA H100 80GB HBM3 · 580.65", "problems": []}
        if index == 42:
            status, gpu = "error", {"text": "Tesla T4 · 535.1", "problems": ["GPU is sm_75, manifest pins sm_90"]}
        report = PlanReport(f"ssh://gpu-{index:03d}", "/opt/comfy", "h100", [r for rows in areas.values()
                                                                             for r in rows], 0.1)
        plan = HostPlan(f"gpu-{index:03d}", status, "h100", f"ssh://root@gpu-{index:03d}.rack.example",
                        report, areas, gpu)
        if index == 17:
            plan = HostPlan("gpu-017", "unreachable", "h100", "ssh://root@gpu-017.rack.example",
                            error="connection refused by gpu-017.rack.example:22 (tried 3 times)")
        hosts.append(plan)
    return FleetPlanResult("20260101T000000-abcdef", "fleet.yaml", hosts, 3.2)


def test_html_report_is_self_contained_and_renders_200_hosts(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    page = render_plan_html(_synthetic_plan(200))
    assert "<script src" not in page and "<link" not in page and "url(" not in page
    path = tmp_path / "plan.html"
    path.write_text(page)
    if browser is None:
        pytest.skip("chromium is missing: apt-get install -y chromium")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"]
    shot = tmp_path / "plan.png"
    subprocess.run([*flags, f"--screenshot={shot}", path.as_uri()], check=True, capture_output=True, timeout=90)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = subprocess.run([*flags, "--dump-dom", path.as_uri()], check=True, capture_output=True, text=True,
                         timeout=90).stdout
    assert dom.count("<tr data-status=") == 200
    assert "gpu-017" in dom and "connection refused" in dom and "GPU is sm_75" in dom


ADA_MANIFEST = """\
name: ada
gpu: {arch: sm_89}
nunchaku: {enabled: false}
comfyui: {}
service: {enabled: false}
vars: {version: 1}
resources:
  - {kind: directory, path: data}
  - {kind: file, path: app.conf, template: app.conf.j2}
"""


def test_a_misfit_host_stops_the_rollout_before_the_canary(fleet: Fleet) -> None:
    """An RTX 3090 under an sm_89 manifest, in what would be batch 3: no host is changed, none rolled back."""
    (fleet.directory / "ada.yaml").write_text(ADA_MANIFEST)
    gpus = {index: ("NVIDIA GeForce RTX 4090", "8.9") for index in range(4)}
    gpus[2] = ("NVIDIA GeForce RTX 3090", "8.6")
    host_extra = {index: {"target": {"python": gpu_python(fleet.directory / "gpus" / str(index), name, cap)}}
                  for index, (name, cap) in gpus.items()}
    fleet.write({"canary": 1, "serial": 1, "rollback_on_failure": True}, count=4, host_extra=host_extra)
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["defaults"]["manifest"] = "ada.yaml"
    fleet.inventory.write_text(yaml.safe_dump(inventory))

    result = fleet.apply()
    assert result.exit_code() == 1
    assert result.aborted and result.aborted.startswith("preflight refused gpu-02: the rollout was not started")
    assert "gpu.arch is sm_89 but GPU 0 (NVIDIA GeForce RTX 3090) is sm_86" in result.aborted
    assert "fix: Set gpu.arch to sm_86" in result.aborted
    assert statuses(result) == {host_name(0): "not-run", host_name(1): "not-run", host_name(2): "failed",
                                host_name(3): "not-run"}
    assert [h.batch for h in result.hosts] == [1, 2, 3, 4]
    assert "preflight: " in str(result.hosts[2].error) and "sm_86" in str(result.hosts[2].error)
    assert all(h.rollback is None for h in result.hosts), "a host that was never touched is never rolled back"
    for index in range(4):
        assert fleet.config(index) is None and read_generations(fleet.root(index)) == []
    assert fleet.rows(result.run_id) == {}

    # The same fleet with the misfit fixed (gpu.arch: auto for that host) rolls out everywhere.
    inventory["hosts"][host_name(2)]["overrides"] = {"gpu": {"arch": "auto"}}
    fleet.inventory.write_text(yaml.safe_dump(inventory))
    fixed = fleet.apply()
    assert fixed.exit_code() == 0, fixed.as_json()
    assert set(statuses(fixed).values()) == {"ok"}
    assert all(fleet.config(index) == f"version=1\nport={8100 + index}\n" for index in range(4))


def test_a_host_this_rollout_did_not_change_is_not_rolled_back(fleet: Fleet) -> None:
    """The newest record on the host is a failed generation of an earlier run; this run's apply on it is
    refused (another run holds its root), so there is nothing of this run to roll back."""
    rollout = {"max_fail_percentage": 100, "rollback_on_failure": True}
    fleet.write(rollout, count=3)
    assert fleet.apply().exit_code() == 0
    failing = "  - {kind: command, name: fails, argv: [\"false\"], creates: never-made}\n"
    (fleet.directory / "failing.yaml").write_text(MANIFEST + failing)
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["hosts"][host_name(1)]["manifest"] = "failing.yaml"
    inventory["rollout"]["rollback_on_failure"] = False
    fleet.inventory.write_text(yaml.safe_dump(inventory))
    assert fleet.apply(limit=host_name(1)).exit_code() == 1
    assert [g["status"] for g in read_generations(fleet.root(1))] == ["ok", "failed"]

    fleet.write(rollout, count=3, defaults_vars={"version": 2})
    lock = RootLock(str(fleet.root(1) / ".provision"), str(fleet.root(1)), "apply", {})
    with lock:
        result = fleet.apply()
    got = {h.name: h for h in result.hosts}
    assert got[host_name(1)].status == "failed" and "wait for it to finish" in str(got[host_name(1)].error)
    assert got[host_name(1)].rollback == {"ok": False, "to": None, "generation": None,
                                          "error": "nothing to roll back: this run recorded no generation"}
    assert [g["status"] for g in read_generations(fleet.root(1))] == ["ok", "failed"]
    assert got[host_name(0)].status == got[host_name(2)].status == "ok"
    assert fleet.config(0) == "version=2\nport=8100\n" and fleet.config(1) == "version=1\nport=8101\n"
