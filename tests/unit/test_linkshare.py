"""The link goes first to an install run fetching packages: when uv and pip fetch, read from their real
output lines, and how a download steps aside meanwhile."""

from __future__ import annotations

import threading
import time

import pytest

from provisioner.agent import linkshare, procs
from provisioner.agent.protocol import StepStopped

# uv 0.13's lines, not on a terminal, for an install that downloads two wheels, builds an sdist and
# downloads one more after the build started.
UV_LINES = [
    ("Using Python 3.11.7 environment at: venv", True),
    ("Resolved 5 packages in 812ms", False),  # nothing announced in flight yet: small files only
    ("Downloading torch (858.0MiB)", True),
    ("Downloading numpy (16.1MiB)", True),
    (" Downloaded numpy", True),
    (" Downloaded torch", False),
    ("   Building insightface==0.7.3", False),  # CPU work: the downloads take the link back
    ("Downloading onnxruntime (16.4MiB)", True),
    (" Downloaded onnxruntime", False),
    ("      Built insightface==0.7.3", False),
    ("Prepared 5 packages in 41.20s", False),
    ("Downloading stray (1.0MiB)", False),  # nothing after Prepared fetches
    ("Installed 5 packages in 2.11s", False),
]
PIP_LINES = [
    ("Looking in indexes: http://127.0.0.1:8000/simple", True),
    ("Collecting torch==2.14.1", True),
    ("  Downloading http://127.0.0.1:8000/files/torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl (900.2 MB)", True),
    ("Collecting insightface", True),
    ("  Preparing metadata (pyproject.toml): started", True),
    ("Building wheels for collected packages: insightface", False),
    ("Installing collected packages: torch, insightface", False),
    ("Successfully installed insightface-0.7.3 torch-2.14.1", False),
]


@pytest.mark.parametrize(("installer", "lines"), [("uv", UV_LINES), ("pip", PIP_LINES)])
def test_an_installer_fetches_until_its_output_says_it_has_its_packages(installer: str,
                                                                       lines: list[tuple[str, bool]]) -> None:
    with linkshare.installer_run(installer) as output:
        assert linkshare.installers_fetching(), "an installer fetches from its start"
        for text, fetching in lines:
            output.line(text)
            assert linkshare.installers_fetching() is fetching, text
    assert not linkshare.installers_fetching()


def test_a_failed_installer_run_gives_the_link_back() -> None:
    with pytest.raises(RuntimeError), linkshare.installer_run("uv"):
        raise RuntimeError("uv pip install failed")
    assert not linkshare.installers_fetching()
    assert linkshare.step_aside() is False


def test_two_runs_fetching_release_the_link_only_when_both_are_done() -> None:
    with linkshare.installer_run("pip") as first, linkshare.installer_run("uv") as second:
        first.line("Installing collected packages: a")
        assert linkshare.installers_fetching()
        second.line("Prepared 1 package in 1ms")
        assert not linkshare.installers_fetching()


def test_a_download_waits_while_an_install_fetches_and_goes_on_when_the_fetch_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert linkshare.step_aside() is False, "nothing fetches: a download reads at once"
    monkeypatch.setattr(linkshare, "STEP_ASIDE_SECONDS", 0.3)
    with linkshare.installer_run("uv"):
        started = time.monotonic()
        assert linkshare.step_aside() is True
        assert time.monotonic() - started >= 0.3, "it waited its turn"

    # A long turn ends early when the fetch ends: the download takes the link back at once.
    monkeypatch.setattr(linkshare, "STEP_ASIDE_SECONDS", 60.0)
    ended = threading.Event()
    with linkshare.installer_run("uv") as output:
        def finish() -> None:
            time.sleep(0.3)
            output.line("Prepared 3 packages in 0.30s")
            ended.set()

        threading.Thread(target=finish, daemon=True).start()
        started = time.monotonic()
        assert linkshare.step_aside() is True
        assert ended.is_set() and time.monotonic() - started < 30


def test_a_download_that_steps_aside_stops_with_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    stopping = threading.Event()
    monkeypatch.setattr(procs, "_stopping", stopping)
    monkeypatch.setattr(linkshare, "STEP_ASIDE_SECONDS", 60.0)
    with linkshare.installer_run("pip"):
        threading.Timer(0.3, stopping.set).start()
        started = time.monotonic()
        with pytest.raises(StepStopped):
            linkshare.step_aside()
        assert time.monotonic() - started < 30
