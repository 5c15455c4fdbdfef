"""The agent loads each resource kind on first use; its list of kinds must match the manifest's."""

from __future__ import annotations

import pytest

from provisioner.agent.kinds import NAMES, kind
from provisioner.agent.protocol import ResourceFailure
from provisioner.resources import RESOURCE_KINDS


def test_every_manifest_kind_has_an_agent_module() -> None:
    assert sorted(NAMES) == sorted(RESOURCE_KINDS)
    for name in NAMES:
        module = kind(name)
        assert callable(module.probe) and callable(module.diff) and callable(module.apply)


def test_an_unknown_kind_is_a_failure_naming_the_known_ones() -> None:
    with pytest.raises(ResourceFailure, match="unknown resource kind 'tarball'.*directory"):
        kind("tarball")
