"""pip's configuration, read through real `pip config list`, becomes the uv flags that keep pip's behaviour."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from provisioner.agent.installers import pip_config_flags, read_pip_config


def _pairs(flags: list[str], flag: str) -> list[str]:
    return [flags[i + 1] for i, value in enumerate(flags[:-1]) if value == flag]


def test_files_sections_and_variables_rank_as_pip_ranks_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local_index = tmp_path / "simple"
    local_index.mkdir()
    links = tmp_path / "links"
    links.mkdir()
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\n"
        "index-url = http://127.0.0.1:9/global/simple\n"
        f"extra-index-url = file://{local_index} file://{tmp_path / 'gone'}/simple\n"
        "pre = true\n"
        "[install]\n"
        "index-url = http://127.0.0.1:9/install/simple\n"
        "trusted-host = mirror.internal\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", f"{links} {tmp_path / 'missing'}")
    monkeypatch.setenv("PIP_CONSTRAINT", str(tmp_path / "missing-constraints.txt"))
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "42")

    settings = read_pip_config(sys.executable)
    assert settings["index-url"] == "http://127.0.0.1:9/install/simple", "the install section beats global"
    flags, env = pip_config_flags(settings)

    assert _pairs(flags, "--index-url") == ["http://127.0.0.1:9/install/simple"]
    assert f"file://{local_index}" in _pairs(flags, "--extra-index-url")
    assert not [u for u in _pairs(flags, "--extra-index-url") if "gone" in u], "pip ignores a missing local index"
    assert _pairs(flags, "--find-links")[:1] == [str(links)] and str(tmp_path / "missing") not in flags
    assert str(tmp_path / "missing-constraints.txt") in _pairs(flags, "-c"), "pip stops on it: so must uv"
    assert _pairs(flags, "--allow-insecure-host") == ["mirror.internal"]
    assert _pairs(flags, "--prerelease") == ["allow"]
    assert env["UV_HTTP_TIMEOUT"] == "42"


def test_no_configuration_adds_nothing() -> None:
    assert pip_config_flags({}) == ([], {})
