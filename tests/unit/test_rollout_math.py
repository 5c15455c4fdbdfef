"""Rollout arithmetic: Ansible-style serial batches, the canary batch, and max-fail at its boundary."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.fleet.inventory import FleetError, InventoryError, load_inventory
from provisioner.fleet.rollout import (
    batch_sizes,
    check_serial_item,
    exceeds_max_fail,
    plan_batches,
    should_abort,
    size_of,
)


@pytest.mark.parametrize(("serial", "total", "sizes"), [
    (0, 7, [7]),
    ("100%", 7, [7]),
    (3, 7, [3, 3, 1]),
    (10, 4, [4]),
    ("25%", 10, [2, 2, 2, 2, 2]),          # 2.5 rounds down
    ("1%", 10, [1] * 10),                  # never below one host
    ([1, 5, "25%"], 20, [1, 5, 5, 5, 4]),  # the last entry repeats
    ([1, 5, "25%"], 3, [1, 2]),
    ([2, "50%"], 10, [2, 5, 3]),
    ([], 5, [5]),
    (1, 0, []),
])
def test_batch_sizes_follow_ansible_serial(serial: int | str | list[int | str], total: int,
                                           sizes: list[int]) -> None:
    assert batch_sizes(serial, total) == sizes
    assert sum(sizes) == total


def test_percentages_are_of_the_total_not_of_what_is_left() -> None:
    assert size_of("30%", 10) == 3
    assert batch_sizes("30%", 10) == [3, 3, 3, 1]


@pytest.mark.parametrize("bad", [-1, "0%", "150%", "abc", "5", True])
def test_bad_serial_items_are_refused_with_the_fix(bad: int | str) -> None:
    with pytest.raises(ValueError, match="host count"):
        check_serial_item(bad)


def test_canary_batch_comes_first_and_serial_covers_the_rest() -> None:
    hosts = [f"h{i}" for i in range(10)]
    batches = plan_batches(hosts, [2, "50%"], canary=1)
    assert [b.hosts for b in batches] == [("h0",), ("h1", "h2"), ("h3", "h4", "h5", "h6"), ("h7", "h8", "h9")]
    assert [b.canary for b in batches] == [True, False, False, False]
    assert [b.number for b in batches] == [1, 2, 3, 4]


def test_canary_as_a_percentage_and_without_serial() -> None:
    batches = plan_batches(list(range(20)), 0, canary="10%")
    assert [len(b.hosts) for b in batches] == [2, 18]
    assert plan_batches([], 5, canary=1) == []


@pytest.mark.parametrize(("failed", "size", "limit", "abort"), [
    (2, 10, 20, False),    # exactly 20%: equalled, not exceeded
    (3, 10, 20, True),
    (1, 3, 33.33, True),   # 33.33...% > 33.33
    (1, 3, 34, False),
    (0, 10, 0, False),
    (1, 10, 0, True),      # 0%: any failure aborts
    (10, 10, 100, False),  # 100%: never aborts on its own
    (4, 5, None, False),   # no limit: only a batch where every host failed aborts
    (5, 5, None, True),
])
def test_max_fail_aborts_only_when_exceeded(failed: int, size: int, limit: float | None, abort: bool) -> None:
    assert exceeds_max_fail(failed, size, limit) is abort


def test_a_canary_stops_on_any_failure() -> None:
    assert should_abort(1, 5, canary=True, max_fail_percentage=50)
    assert not should_abort(0, 5, canary=True, max_fail_percentage=None)
    assert not should_abort(2, 5, canary=False, max_fail_percentage=50)


def _inventory(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m.yaml").write_text("name: m\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_inventory_layers_defaults_groups_then_host(tmp_path: Path) -> None:
    path = _inventory(tmp_path, """\
defaults: {manifest: m.yaml, vars: {port: 8188, tier: base}, target: {user: ops}}
groups:
  a100: {vars: {tier: a100}, target: {port: 2222}}
  canary: {hosts: [gpu-02]}
hosts:
  gpu-01: {connection: "ssh://gpu-01.rack.example", groups: [a100]}
  gpu-02: {connection: "ssh://gpu-02.rack.example", groups: [a100], vars: {port: 9000}, root: /srv/comfy}
rollout: {serial: [1, "50%"], canary: 1, max_fail_percentage: 10}
""")
    inventory = load_inventory(path)
    one, two = inventory.hosts
    assert one.vars == {"port": 8188, "tier": "a100"}
    assert one.target == {"user": "ops", "port": 2222, "connection": "ssh://gpu-01.rack.example"}
    assert two.vars["port"] == 9000 and two.target["root"] == "/srv/comfy"
    assert two.groups == ["a100", "canary"]
    assert [h.name for h in inventory.select("canary")] == ["gpu-02"]
    assert [h.name for h in inventory.select("gpu-*,!gpu-02")] == ["gpu-01"]
    with pytest.raises(FleetError, match="matches no host or group"):
        inventory.select("nope")


def test_inventory_errors_name_the_line_and_the_fix(tmp_path: Path) -> None:
    path = _inventory(tmp_path, """\
defaults: {manifest: m.yaml}
hosts:
  gpu-01: {conection: "ssh://gpu-01.rack.example"}
rollout: {serial: "150%"}
""")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    text = str(info.value)
    assert text.startswith("2 problems in inventory:")
    assert "fleet.yaml:3:12: hosts.gpu-01.conection: unknown key 'conection'; did you mean 'connection'?" in text
    assert "fleet.yaml:4:11: rollout.serial: '150%' is not a batch size" in text
    assert "percentage between 1% and 100%" in text


def test_inventory_reference_errors(tmp_path: Path) -> None:
    path = _inventory(tmp_path, """\
hosts:
  gpu-01: {groups: [missing], manifest: m.yaml}
  gpu-02: {}
""")
    with pytest.raises(InventoryError, match="host gpu-01 lists unknown group 'missing'"):
        load_inventory(path)
    path.write_text("hosts:\n  gpu-02: {}\n")
    with pytest.raises(InventoryError, match="host gpu-02 has no manifest: set manifest: on the host"):
        load_inventory(path)


def test_the_example_inventory_expands_every_host_without_contacting_it() -> None:
    from provisioner.engine import RunOptions
    from provisioner.fleet.sessions import prepare_hosts

    inventory = load_inventory(Path(__file__).parents[2] / "manifests" / "fleet.example.yaml")
    prepared = {p.name: p for p in prepare_hosts(inventory.hosts, RunOptions())}
    assert [h.name for h in inventory.select("h100,!gpu-02")] == ["gpu-01", "gpu-03", "gpu-04"]
    gpu03 = prepared["gpu-03"].session.loaded.manifest
    expected = (1, 8189, "ssh://gpu-03.rack.example:2222")
    assert (gpu03.gpu.index, gpu03.service.port, gpu03.target.connection) == expected
    assert prepared["dev-01"].target.root == "/srv/comfy-dev"
    assert prepared["gpu-04"].session.loaded.manifest.vars["pip_index_url"] == "http://pypi.rack.example:3141/simple"
    assert inventory.rollout.canary == 1 and inventory.rollout.serial == [1, 5, "25%"]
