"""The check program runs on the host under the venv's Python (>= 3.8) with no third-party import at module
import time: torch is imported lazily, where a check needs it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from provisioner.checks.runner import host_modules

CHECKS = Path(__file__).resolve().parents[2] / "provisioner" / "checks"
HOST_FILES = sorted(CHECKS.glob("host_*.py"))


def test_every_host_module_ships() -> None:
    shipped = {name.rsplit(".", 1)[-1] for name in host_modules()}
    assert {path.stem for path in HOST_FILES} <= shipped
    assert {"host_w4a4", "host_first_op", "host_fp8"} <= shipped


@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: p.name)
def test_host_module_parses_as_python_38(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 8))


@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: p.name)
def test_host_module_imports_only_the_standard_library_at_top_level(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            top += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top.append(node.module.split(".")[0])
    third_party = [name for name in top if name not in sys.stdlib_module_names and name != "__future__"]
    assert third_party == [], f"{path.name} imports {third_party} at module level"


@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: p.name)
def test_no_annotation_is_evaluated_at_runtime(path: Path) -> None:
    """`dict[str, Any]` and `X | None` only parse on 3.8 as postponed annotations."""
    source = path.read_text(encoding="utf-8")
    assert "from __future__ import annotations" in source
