"""What `provision apply` shows while it downloads from the stand-in Hub: live on a terminal, plain lines
in a pipe, only the summary under --quiet, no colour under NO_COLOR."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.fake_hub import HubState, serve_hub
from tests.support.pty_run import PROVISION, run_on_pty

MODEL = os.urandom(3 * 1024 * 1024 + 17)
DOWNLOAD = "download:models/unet/model.safetensors"
ANSI = re.compile(r"\x1b[\[\]()][0-9;?]*[A-Za-z]?")
#: Select Graphic Rendition codes that set a colour (foreground, background, 256/true colour).
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


@pytest.fixture
def manifest(tmp_path: Path) -> Iterator[Path]:
    state = HubState()
    sha = state.add("org/flux", "model.safetensors", MODEL)
    with serve_hub(state) as endpoint:
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump({"name": "progress", "target": {"root": str(tmp_path / "root")}, "resources": [
            {"kind": "download", "path": "models/unet/model.safetensors",
             "url": f"{endpoint}/org/flux/resolve/main/model.safetensors", "sha256": sha, "size": len(MODEL)},
            {"kind": "file", "path": "a.txt", "content": "a\n"},
        ]}))
        yield path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without the colour switches a developer may have set, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(PROVISION_LEDGER=f"sqlite:///{tmp_path / 'ledger.sqlite'}", TERM="xterm-256color", COLUMNS="120")
    return {**env, **extra}


def test_a_terminal_gets_live_progress_with_bytes_and_colour(manifest: Path, tmp_path: Path) -> None:
    done = run_on_pty("apply", str(manifest), env=_env(tmp_path))
    assert done.returncode == 0, done.output
    assert "\x1b[?25l" in done.output, "rich's live display hides the cursor while it draws"
    assert COLOUR.search(done.output), "a terminal gets colour"
    plain = ANSI.sub("", done.output)
    assert "3.0 MiB/3.0 MiB" in plain, "the download's bytes done/total are drawn"
    assert f"✓ {DOWNLOAD}" in plain and "✓ file:a.txt" in plain
    assert "Applied: 2 changed, 0 ok" in plain


def test_a_pipe_gets_plain_lines_without_control_codes(manifest: Path, tmp_path: Path) -> None:
    done = subprocess.run([*PROVISION, "apply", str(manifest)], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert f"  … {DOWNLOAD}" in lines
    assert f"    {DOWNLOAD}: 3.0 MiB of 3.0 MiB (100%)" in [line.split(",")[0] for line in lines]
    assert any(line.startswith(f"  ✓ {DOWNLOAD}  ") for line in lines)
    assert "Applied: 2 changed, 0 ok" in done.stdout


def test_quiet_prints_only_the_summary_even_on_a_terminal(manifest: Path, tmp_path: Path) -> None:
    done = run_on_pty("apply", "--quiet", str(manifest), env=_env(tmp_path))
    assert done.returncode == 0, done.output
    assert [line for line in done.output.splitlines() if line.strip()] == [
        done.output.strip()], "one line and nothing else: no progress, no report"
    assert re.fullmatch(r"Applied: 2 changed, 0 ok; recorded generation 1 \([0-9.]+s\)\.", done.output.strip())

    again = run_on_pty("plan", "-q", str(manifest), env=_env(tmp_path))
    assert again.returncode == 0
    assert re.fullmatch(r"Plan: 0 to create, 0 to change, 0 drifted, 2 ok \([0-9.]+s\)\.", again.output.strip())


def test_no_color_drops_colour_on_a_terminal(manifest: Path, tmp_path: Path) -> None:
    coloured_plan = run_on_pty("plan", str(manifest), env=_env(tmp_path))
    assert coloured_plan.returncode == 2
    assert COLOUR.search(coloured_plan.output), "without NO_COLOR the plan is coloured"
    assert "+ create  " + DOWNLOAD in ANSI.sub("", coloured_plan.output)

    plan = run_on_pty("plan", str(manifest), env=_env(tmp_path, NO_COLOR="1"))
    assert plan.returncode == 2
    assert not COLOUR.search(plan.output), plan.output
    assert "+ create  " + DOWNLOAD in plan.output, "the sign still tells a create apart"

    done = run_on_pty("apply", str(manifest), env=_env(tmp_path, NO_COLOR="1"))
    assert done.returncode == 0, done.output
    assert not COLOUR.search(done.output), done.output
    assert "3.0 MiB/3.0 MiB" in ANSI.sub("", done.output), "still live, only without colour"


def test_term_dumb_is_never_live(manifest: Path, tmp_path: Path) -> None:
    done = run_on_pty("apply", str(manifest), env=_env(tmp_path, TERM="dumb"))
    assert done.returncode == 0, done.output
    assert "\x1b" not in done.output
    assert f"  … {DOWNLOAD}" in done.output
