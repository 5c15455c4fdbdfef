"""While an install run fetches its packages, the apply's model downloads give it the link, and take it
back once the installer has them (linkshare.py), with the real pip and uv reading a real index.

The index sends a wheel's headers at once and holds its body for HOLD_SECONDS, measuring how far the
model's `.part` file grew meanwhile: at the Hub stand-in's rate it would grow by RATE x HOLD_SECONDS; a
download that steps aside reads one chunk (1 MiB) a second.
"""

from __future__ import annotations

import functools
import http.server
import os
import time
from pathlib import Path
from typing import Any

import pytest

from provisioner.engine import HostSession, RunOptions
from provisioner.manifest import load_manifest
from tests.support.fake_hub import HubState, serve_hub
from tests.support.hosts import TargetHost, installed_version, write_manifest
from tests.support.installers import INSTALLERS, place_uv
from tests.support.runs import apply, changed
from tests.support.servers import serve_handler
from tests.support.wheels import build_wheel, write_simple_index

RATE = 4_000_000
MODEL_BYTES = 24 << 20
HOLD_SECONDS = 4.0
#: uv announces ("Downloading provbig (3.0MiB)") only the files over 1 MiB, and its fetch is followed
#: through what it announces: the wheel is larger, as torch's are.
WHEEL_PAYLOAD = 3 << 20


class _HeldIndex:
    """A PEP 503 index whose wheel bodies wait HOLD_SECONDS after their headers went out."""

    def __init__(self, root: Path, watched: Path) -> None:
        self.root = root
        self.watched = watched  # the model's .part file
        self.growth: list[int] = []  # how much it grew while each wheel body was held
        self.released_at: list[float] = []

    def handler(self) -> Any:
        index = self

        class Held(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def copyfile(self, source: Any, outputfile: Any) -> None:
                if self.path.endswith(".whl"):
                    before = index.size()
                    time.sleep(HOLD_SECONDS)
                    index.growth.append(index.size() - before)
                    index.released_at.append(time.time())
                super().copyfile(source, outputfile)

        return functools.partial(Held, directory=str(self.root))

    def size(self) -> int:
        try:
            return self.watched.stat().st_size
        except FileNotFoundError:
            return 0


@pytest.mark.parametrize("installer", INSTALLERS)
def test_the_model_download_gives_the_link_to_the_install_fetching_its_packages(tmp_path: Path,
                                                                                 installer: str) -> None:
    house = tmp_path / "house"
    build_wheel(house, "provbig", "1.0.0", extra_files={"provbig/blob.bin": os.urandom(WHEEL_PAYLOAD)})
    write_simple_index(house, tmp_path / "index")
    host = TargetHost("local", "local", str(tmp_path / "root"))
    if installer == "uv":
        place_uv(host)
    hub = HubState(bytes_per_second=RATE)
    sha = hub.add("org/flux", "flux.safetensors", os.urandom(MODEL_BYTES))
    index = _HeldIndex(tmp_path / "index", Path(host.path("models/flux.safetensors.part")))
    with serve_hub(hub) as endpoint, serve_handler(index.handler()) as base:
        venv = {"kind": "venv", "path": "venv", "installer": installer}
        first = write_manifest(tmp_path, host, {"resources": [venv]}, name="venv.yaml")
        assert apply(first).ok  # the venv is there: the install and the download start together
        manifest = write_manifest(tmp_path, host, {"resources": [
            venv,
            {"kind": "pip", "venv": "venv", "packages": ["provbig==1.0.0"], "index_url": f"{base}/simple",
             "installer": installer},
            {"kind": "download", "path": "models/flux.safetensors", "sha256": sha, "size": MODEL_BYTES,
             "url": f"{endpoint}/org/flux/resolve/main/flux.safetensors"},
        ]})
        logs: list[str] = []

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "log":
                logs.append(str(event.get("message")))

        report = HostSession(load_manifest(manifest), RunOptions()).apply(on_event)
    assert report.ok, report.as_json()
    assert changed(report) == ["pip:venv", "download:models/flux.safetensors"]
    # pip fetches the wheel once; uv twice (first for its metadata: this index serves no PEP 658 file).
    assert 1 <= len(index.growth) <= 2, index.growth
    # Stepping aside, the download reads a chunk a second: HOLD_SECONDS + 1 MiB at most, with a chunk
    # of slack for the read under way when the install began. Sharing the link, it would read ~16 MB.
    assert all(grew <= (HOLD_SECONDS + 2) * (1 << 20) < RATE * HOLD_SECONDS for grew in index.growth), index.growth
    download = next(row for row in report.resources if row["id"] == "download:models/flux.safetensors")
    assert download["ended"] > index.released_at[-1], "the download finished after the install's fetch"
    assert any("gives the link to the install run" in line for line in logs), logs
    assert installed_version(host, "provbig") == "1.0.0"
    assert Path(host.path("models/flux.safetensors")).stat().st_size == MODEL_BYTES
