"""The executable runs with the cycle collector off; long commands switch it back on for their own garbage."""

from __future__ import annotations

import gc
import subprocess
import sys

from provisioner.launcher import collect_from_here


def test_collect_from_here_turns_the_collector_on_only_where_it_was_off() -> None:
    assert gc.isenabled()
    collect_from_here()
    assert gc.isenabled() and gc.get_freeze_count() == 0  # a library caller's heap is left alone

    gc.disable()
    try:
        collect_from_here()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0  # the start-up heap is out of the collector's scans
    finally:
        gc.enable()
        gc.unfreeze()


def test_the_executable_runs_a_command_with_the_collector_off() -> None:
    script = (
        "import gc, sys, click\n"
        "import provisioner.cli as cli\n"
        "@cli.cli.command('gc-state')\n"
        "def gc_state() -> None:\n"
        "    click.echo(f'enabled={gc.isenabled()}')\n"
        "sys.argv = ['provision', 'gc-state']\n"
        "from provisioner.launcher import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "enabled=False"
